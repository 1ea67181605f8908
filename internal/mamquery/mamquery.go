// Package mamquery is the query side of XEP-0313 Message Archive Management shared by every
// archive the server keeps (user archives, MUC room archives): it parses a <query/> with its
// XEP-0004 form and XEP-0059 result set, runs it against a storage.Archive, and formats the
// <result/> messages and the <fin/> that answer it. It also builds and strips the XEP-0359
// <stanza-id/> elements that name archived messages.
//
// An archive owner serves a query in three steps:
//
//	req, err := mamquery.Parse(iq.Payload, limits)   // *stanza.Error on bad input
//	page, err := archive.Query(ctx, owner, req)     // item-not-found for unknown ids
//	for _, it := range page.Items {                 // flip-page already applied
//		msg, err := mamquery.ResultMessage(archiveJID, iq.From.String(), req.QueryID, it)
//		send(msg)
//	}
//	return mamquery.Fin(page), nil                  // the iq result payload
//
// or calls Archive.Serve, which does exactly that. Items stored in an archive hold the
// serialized stanza (jabber:client) as Data, its sender's or peer's bare JID as With and the
// archive id that also appears in the stanza's <stanza-id/>.
package mamquery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Namespaces of the protocols involved.
const (
	// NS is XEP-0313 Message Archive Management, also the FORM_TYPE of its query form.
	NS = "urn:xmpp:mam:2"
	// NSExtended advertises the before-id, after-id and ids fields, flip-page and metadata.
	NSExtended = "urn:xmpp:mam:2#extended"
	// NSRSM is XEP-0059 Result Set Management.
	NSRSM = "http://jabber.org/protocol/rsm"
	// NSData is XEP-0004 Data Forms.
	NSData = "jabber:x:data"
	// NSForward is XEP-0297 Stanza Forwarding.
	NSForward = "urn:xmpp:forward:0"
	// NSSID is XEP-0359 Unique and Stable Stanza IDs.
	NSSID = "urn:xmpp:sid:0"
)

// Limits bound the work one query may cause.
type Limits struct {
	// DefaultMax is the page size when the client asks for none.
	DefaultMax int
	// MaxMax is the largest page served; larger requests are served this many items, which
	// XEP-0059 allows ("the responding entity MAY return fewer items").
	MaxMax int
	// MaxScan bounds the items examined to fill a page when the with filter needs a check the
	// storage index cannot do (a full JID in a user archive).
	MaxScan int
}

// DefaultLimits are the limits used where none are configured.
var DefaultLimits = Limits{DefaultMax: 50, MaxMax: 250, MaxScan: 5000}

func (l Limits) normalized() Limits {
	if l.DefaultMax <= 0 {
		l.DefaultMax = DefaultLimits.DefaultMax
	}
	if l.MaxMax <= 0 {
		l.MaxMax = DefaultLimits.MaxMax
	}
	if l.DefaultMax > l.MaxMax {
		l.DefaultMax = l.MaxMax
	}
	if l.MaxScan <= 0 {
		l.MaxScan = DefaultLimits.MaxScan
	}
	return l
}

// Request is a parsed archive query.
type Request struct {
	// QueryID is echoed in every <result/>; it may be empty.
	QueryID string
	// With filters by conversation partner; the zero JID means no filter.
	With jid.JID
	// Start and End bound the time range (inclusive); zero means unbounded.
	Start, End time.Time
	// AfterID and BeforeID are the exclusive id bounds of XEP-0313's extended fields.
	AfterID, BeforeID string
	// IDs asks for exactly these items (extended 'ids' field).
	IDs []string
	// Max is the page size, already bounded by Limits.
	Max int
	// After and Before are the RSM cursors. Last reports a <before/> element, empty or not:
	// the page is taken from the end of the range.
	After, Before string
	Last          bool
	// FlipPage asks for the page's items newest first.
	FlipPage bool
	// Fields holds the values of the archive's own form fields, those passed to Parse as
	// extraFields; any other field is refused (XEP-0313 §4.1.4).
	Fields map[string][]string
}

func badRequest(format string, args ...any) *stanza.Error {
	return stanza.NewError("bad-request", fmt.Sprintf(format, args...))
}

// Parse reads a <query xmlns='urn:xmpp:mam:2'/> element of an iq set. extraFields names the
// form fields the archive defines beyond XEP-0313's (and advertises in Form); their values land
// in Request.Fields, and any other unknown field is feature-not-implemented, as XEP-0313
// §4.1.4 requires. Errors are *stanza.Error values (bad-request, feature-not-implemented,
// policy-violation) ready to become the iq's error reply.
func Parse(q *stanza.Element, lim Limits, extraFields ...string) (*Request, error) {
	lim = lim.normalized()
	if q == nil || q.Space != NS || q.Local != "query" {
		return nil, badRequest("not a %s query", NS)
	}
	req := &Request{QueryID: q.Attr("queryid"), Max: lim.DefaultMax}
	if len(req.QueryID) > 256 {
		return nil, badRequest("queryid too long")
	}
	if x := q.Child(NSData, "x"); x != nil {
		if err := req.parseForm(x, extraFields); err != nil {
			return nil, err
		}
	}
	if set := q.Child(NSRSM, "set"); set != nil {
		if err := req.parseRSM(set, lim); err != nil {
			return nil, err
		}
	}
	req.FlipPage = q.Child(NS, "flip-page") != nil
	if len(req.IDs) > 0 {
		if req.After != "" || req.Before != "" || req.AfterID != "" || req.BeforeID != "" {
			return nil, badRequest("ids cannot be combined with id bounds or paging cursors")
		}
		if len(req.IDs) > lim.MaxMax {
			return nil, stanza.NewError("policy-violation", fmt.Sprintf("at most %d ids per query", lim.MaxMax))
		}
	}
	if !req.Start.IsZero() && !req.End.IsZero() && req.End.Before(req.Start) {
		return nil, badRequest("end lies before start")
	}
	return req, nil
}

func (req *Request) parseForm(x *stanza.Element, extra []string) error {
	if t := x.Attr("type"); t != "submit" && t != "" {
		return badRequest("the query form must be of type submit")
	}
	formType := ""
	for f := range x.Elements() {
		if f.Space != NSData || f.Local != "field" {
			continue
		}
		var values []string
		for v := range f.Elements() {
			if v.Space == NSData && v.Local == "value" {
				values = append(values, v.Text())
			}
		}
		one := ""
		if len(values) > 0 {
			one = strings.TrimSpace(values[0])
		}
		var err error
		switch name := f.Attr("var"); name {
		case "FORM_TYPE":
			formType = one
		case "with":
			if one != "" {
				if req.With, err = jid.Parse(one); err != nil {
					return badRequest("invalid with JID %q", one)
				}
			}
		case "start":
			if req.Start, err = parseTime(one); err != nil {
				return badRequest("invalid start %q", one)
			}
		case "end":
			if req.End, err = parseTime(one); err != nil {
				return badRequest("invalid end %q", one)
			}
		case "after-id":
			req.AfterID = one
		case "before-id":
			req.BeforeID = one
		case "ids":
			for _, v := range values {
				if v = strings.TrimSpace(v); v != "" {
					req.IDs = append(req.IDs, v)
				}
			}
		default:
			if !slices.Contains(extra, name) {
				return stanza.NewError("feature-not-implemented", fmt.Sprintf("unsupported query field %q", name))
			}
			if req.Fields == nil {
				req.Fields = map[string][]string{}
			}
			req.Fields[name] = values
		}
	}
	if formType != "" && formType != NS {
		return badRequest("unsupported FORM_TYPE %q", formType)
	}
	return nil
}

// parseTime reads an XEP-0082 DateTime; an empty value means no bound.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

func (req *Request) parseRSM(set *stanza.Element, lim Limits) error {
	for c := range set.Elements() {
		if c.Space != NSRSM {
			continue
		}
		switch c.Local {
		case "max":
			n, err := strconv.Atoi(strings.TrimSpace(c.Text()))
			if err != nil || n < 0 {
				return badRequest("invalid RSM max %q", c.Text())
			}
			req.Max = min(n, lim.MaxMax)
		case "after":
			req.After = strings.TrimSpace(c.Text())
			if req.After == "" {
				return badRequest("empty RSM after")
			}
		case "before":
			req.Before = strings.TrimSpace(c.Text())
			req.Last = true
		case "index":
			// Index paging costs an OFFSET scan that grows with the archive.
			return stanza.NewError("feature-not-implemented", "RSM index paging is not supported; page with after and before")
		}
	}
	return nil
}

// Page is the answer to a query: the items in the order they are to be sent, and the RSM
// description of the page.
type Page struct {
	// Items are chronological, or newest first when the request had flip-page.
	Items []storage.Item
	// First and Last are the ids of the chronologically first and last items (RSM <first/> and
	// <last/>), empty for an empty page.
	First, Last string
	// Complete reports that the page reaches the end of the range in the paging direction.
	Complete bool
}

// Archive runs queries against one archive store.
type Archive struct {
	Store  storage.Archive
	Limits Limits
	// Peer maps a with filter to the value of the store's With column, and optionally to a check
	// that every item found that way must pass. Nil means the default of user archives: With is
	// the bare JID, and a full JID additionally matches the stanza's 'from' or 'to' against it.
	Peer func(with jid.JID) (peer string, match func(storage.Item) bool)
}

// Query runs req against owner's archive. An unknown id in a cursor, bound or the ids list
// yields item-not-found.
func (a *Archive) Query(ctx context.Context, owner string, req *Request) (*Page, error) {
	lim := a.Limits.normalized()
	peer, match := "", func(storage.Item) bool { return true }
	filtered := false
	if req.With.Domainpart() != "" {
		peerFn := a.Peer
		if peerFn == nil {
			peerFn = DefaultPeer
		}
		var m func(storage.Item) bool
		peer, m = peerFn(req.With)
		if m != nil {
			match, filtered = m, true
		}
	}
	if len(req.IDs) > 0 {
		return a.byIDs(ctx, owner, req, peer, match)
	}
	q := storage.Query{With: peer, Start: req.Start, End: req.End, Limit: req.Max}
	var err error
	if q.After, err = a.later(ctx, owner, req.AfterID, req.After); err != nil {
		return nil, err
	}
	if q.Before, err = a.earlier(ctx, owner, req.BeforeID, req.Before); err != nil {
		return nil, err
	}
	// An RSM <before/> pages backwards; a before-id alone is only the range's upper bound.
	q.Last = req.Last
	q.Forward = !req.Last
	if req.Max == 0 {
		// A zero max asks only for the page description (XEP-0059 §2.6): peek one item to
		// tell whether the range is empty.
		q.Limit = 1
	}
	var items []storage.Item
	var sp storage.Page
	if filtered {
		items, sp, err = a.scan(ctx, owner, q, match, lim.MaxScan)
	} else {
		items, sp, err = a.Store.Query(ctx, owner, q)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, stanza.NewError("item-not-found", "no such archive id")
	}
	if err != nil {
		return nil, err
	}
	if req.Max == 0 {
		return &Page{Items: []storage.Item{}, Complete: len(items) == 0}, nil
	}
	p := &Page{Items: items, First: sp.First, Last: sp.Last, Complete: sp.Complete}
	if req.FlipPage {
		slices.Reverse(p.Items)
	}
	return p, nil
}

// scan fills a page with the items that pass match, reading the index in batches and
// examining at most maxScan items, so a rare full-JID filter cannot make one query read a
// whole conversation. A page cut short by the bound is reported incomplete and the client
// continues from its last item.
func (a *Archive) scan(ctx context.Context, owner string, q storage.Query, match func(storage.Item) bool, maxScan int) ([]storage.Item, storage.Page, error) {
	want := q.Limit
	backward := q.Last || (q.Before != "" && !q.Forward)
	batch := q
	batch.Limit = max(want, 50)
	var out []storage.Item
	scanned := 0
	for {
		items, sp, err := a.Store.Query(ctx, owner, batch)
		if err != nil {
			return nil, storage.Page{}, err
		}
		scanned += len(items)
		if backward {
			slices.Reverse(items)
		}
		for i, it := range items {
			if !match(it) {
				continue
			}
			out = append(out, it)
			if want > 0 && len(out) == want {
				rest := i < len(items)-1 || !sp.Complete
				return finishScan(out, backward, !rest)
			}
		}
		if sp.Complete {
			return finishScan(out, backward, true)
		}
		if scanned >= maxScan {
			return finishScan(out, backward, false)
		}
		if backward {
			batch.Before, batch.Forward, batch.Last = sp.First, false, true
		} else {
			batch.After = sp.Last
		}
	}
}

// finishScan puts the matches of a scan in chronological order and describes the page.
func finishScan(out []storage.Item, backward, complete bool) ([]storage.Item, storage.Page, error) {
	if backward {
		slices.Reverse(out)
	}
	if out == nil {
		out = []storage.Item{}
	}
	p := storage.Page{Complete: complete}
	if len(out) > 0 {
		p.First, p.Last = out[0].ID, out[len(out)-1].ID
	}
	return out, p, nil
}

// later returns whichever of an after-id bound and an RSM after cursor lies later in the
// archive, so that both restrict the range; either may be empty.
func (a *Archive) later(ctx context.Context, owner, bound, cursor string) (string, error) {
	return a.pick(ctx, owner, bound, cursor, func(b, c time.Time) bool { return b.After(c) })
}

// earlier returns whichever of a before-id bound and an RSM before cursor lies earlier.
func (a *Archive) earlier(ctx context.Context, owner, bound, cursor string) (string, error) {
	return a.pick(ctx, owner, bound, cursor, func(b, c time.Time) bool { return b.Before(c) })
}

func (a *Archive) pick(ctx context.Context, owner, bound, cursor string, boundWins func(b, c time.Time) bool) (string, error) {
	if bound == "" || cursor == "" {
		return bound + cursor, nil
	}
	bi, err := a.get(ctx, owner, bound)
	if err != nil {
		return "", err
	}
	ci, err := a.get(ctx, owner, cursor)
	if err != nil {
		return "", err
	}
	// On equal times the cursor wins: a client pages within its bounds.
	if boundWins(bi.Time, ci.Time) {
		return bound, nil
	}
	return cursor, nil
}

func (a *Archive) get(ctx context.Context, owner, id string) (storage.Item, error) {
	it, err := a.Store.Get(ctx, owner, id)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalid) {
		return storage.Item{}, stanza.NewError("item-not-found", "no such archive id")
	}
	return it, err
}

// byIDs answers the extended 'ids' field: exactly the named items that also pass the other
// filters, chronologically.
func (a *Archive) byIDs(ctx context.Context, owner string, req *Request, peer string, match func(storage.Item) bool) (*Page, error) {
	var items []storage.Item
	for _, id := range req.IDs {
		it, err := a.get(ctx, owner, id)
		if err != nil {
			return nil, err
		}
		switch {
		case peer != "" && it.With != peer, !match(it),
			!req.Start.IsZero() && it.Time.Before(req.Start),
			!req.End.IsZero() && it.Time.After(req.End):
			continue
		}
		items = append(items, it)
	}
	slices.SortStableFunc(items, func(x, y storage.Item) int { return x.Time.Compare(y.Time) })
	p := &Page{Items: items, Complete: true}
	if p.Items == nil {
		p.Items = []storage.Item{}
	}
	if len(items) > 0 {
		p.First, p.Last = items[0].ID, items[len(items)-1].ID
	}
	if req.FlipPage {
		slices.Reverse(p.Items)
	}
	return p, nil
}

// DefaultPeer is the with mapping of user archives: the With column holds the peer's bare JID;
// a full JID also has to be the stanza's 'from' or 'to' (XEP-0313 §4.1.1: a bare JID matches
// every resource, a full JID only that resource).
func DefaultPeer(with jid.JID) (string, func(storage.Item) bool) {
	bare := with.Bare().String()
	if with.Resourcepart() == "" {
		return bare, nil
	}
	full := with.String()
	return bare, func(it storage.Item) bool {
		el, err := stanza.Parse(it.Data)
		if err != nil {
			return false
		}
		return sameJID(el.Attr("from"), full) || sameJID(el.Attr("to"), full)
	}
}

func sameJID(s, want string) bool {
	if s == "" {
		return false
	}
	j, err := jid.Parse(s)
	return err == nil && j.String() == want
}

// Form returns the <query/> answering an iq get on the query namespace: the search form with
// the fields this package understands (XEP-0313 §4.1.1, extended fields of §6.1), plus extra
// fields an archive defines itself.
func Form(extra ...*stanza.Element) *stanza.Element {
	x := stanza.NewElement(NSData, "x", stanza.Attr{Name: "type", Value: "form"})
	ft := field("FORM_TYPE", "hidden", "")
	ft.AddChild(stanza.NewElement(NSData, "value").AddText(NS))
	x.AddChild(ft)
	x.AddChild(field("with", "jid-single", "With"))
	x.AddChild(field("start", "text-single", "Start"))
	x.AddChild(field("end", "text-single", "End"))
	x.AddChild(field("after-id", "text-single", "After id"))
	x.AddChild(field("before-id", "text-single", "Before id"))
	x.AddChild(field("ids", "list-multi", "Ids"))
	for _, f := range extra {
		x.AddChild(f)
	}
	q := stanza.NewElement(NS, "query")
	q.AddChild(x)
	return q
}

func field(name, typ, label string) *stanza.Element {
	f := stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: name}, stanza.Attr{Name: "type", Value: typ})
	if label != "" {
		f.SetAttr("label", label)
	}
	if name == "ids" {
		// XEP-0313 §6.1.3 marks the field as open to any value.
		f.AddChild(stanza.NewElement("http://jabber.org/protocol/xdata-validate", "validate", stanza.Attr{Name: "datatype", Value: "xs:string"}).
			AddChild(stanza.NewElement("http://jabber.org/protocol/xdata-validate", "open")))
	}
	return f
}

// ResultMessage wraps an archived item in the <message/> that carries it to the querier:
// from is the archive's JID (the account's bare JID, or the room), to the querying full JID.
func ResultMessage(from, to, queryID string, it storage.Item) (*stanza.Element, error) {
	orig, err := stanza.Parse(it.Data)
	if err != nil {
		return nil, fmt.Errorf("mamquery: archived item %q: %w", it.ID, err)
	}
	orig.Space = stanza.NSClient
	m := stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "to", Value: to})
	if from != "" {
		m.SetAttr("from", from)
	}
	res := stanza.NewElement(NS, "result", stanza.Attr{Name: "id", Value: it.ID})
	if queryID != "" {
		res.SetAttr("queryid", queryID)
	}
	fwd := stanza.NewElement(NSForward, "forwarded")
	fwd.AddChild(stanza.NewElement(stanza.NSDelay, "delay", stanza.Attr{Name: "stamp", Value: Stamp(it.Time)}))
	fwd.AddChild(orig)
	res.AddChild(fwd)
	m.AddChild(res)
	return m, nil
}

// Stamp formats a time as an XEP-0082 DateTime in UTC, with microseconds when it has any.
func Stamp(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04:05Z")
	}
	return t.Format("2006-01-02T15:04:05.000000Z")
}

// Fin returns the <fin/> that ends the answer to a query: the iq result's payload.
func Fin(p *Page) *stanza.Element {
	fin := stanza.NewElement(NS, "fin")
	if p.Complete {
		fin.SetAttr("complete", "true")
	}
	set := stanza.NewElement(NSRSM, "set")
	if p.First != "" {
		set.AddChild(stanza.NewElement(NSRSM, "first").AddText(p.First))
		set.AddChild(stanza.NewElement(NSRSM, "last").AddText(p.Last))
	}
	fin.AddChild(set)
	return fin
}

// Serve runs a parsed query on owner's archive, hands each result message to send in order and
// returns the <fin/> for the iq result. from is the archive's JID and to the querier's JID.
// A stored item that no longer parses is skipped rather than failing the whole page.
func (a *Archive) Serve(ctx context.Context, owner, from, to string, req *Request, send func(*stanza.Element)) (*stanza.Element, error) {
	p, err := a.Query(ctx, owner, req)
	if err != nil {
		return nil, err
	}
	for _, it := range p.Items {
		m, err := ResultMessage(from, to, req.QueryID, it)
		if err != nil {
			continue
		}
		send(m)
	}
	return Fin(p), nil
}

// Metadata answers XEP-0313 §6.2's metadata request: the ids and times of the first and last
// items of owner's archive, or an empty <metadata/> when the archive is empty.
func (a *Archive) Metadata(ctx context.Context, owner string) (*stanza.Element, error) {
	md := stanza.NewElement(NS, "metadata")
	first, _, err := a.Store.Query(ctx, owner, storage.Query{Limit: 1})
	if err != nil {
		return nil, err
	}
	last, _, err := a.Store.Query(ctx, owner, storage.Query{Limit: 1, Last: true})
	if err != nil {
		return nil, err
	}
	if len(first) == 0 || len(last) == 0 {
		return md, nil
	}
	md.AddChild(stanza.NewElement(NS, "start", stanza.Attr{Name: "id", Value: first[0].ID}, stanza.Attr{Name: "timestamp", Value: Stamp(first[0].Time)}))
	md.AddChild(stanza.NewElement(NS, "end", stanza.Attr{Name: "id", Value: last[0].ID}, stanza.Attr{Name: "timestamp", Value: Stamp(last[0].Time)}))
	return md, nil
}

// StanzaID returns the XEP-0359 <stanza-id/> naming an archived message.
func StanzaID(by, id string) *stanza.Element {
	return stanza.NewElement(NSSID, "stanza-id", stanza.Attr{Name: "by", Value: by}, stanza.Attr{Name: "id", Value: id})
}

// HasStanzaID reports whether msg carries any <stanza-id/>, so that callers can skip building
// the archive's JID for StripStanzaIDs on the messages (nearly all) that carry none.
func HasStanzaID(msg *stanza.Element) bool {
	for _, n := range msg.Children {
		if n.Elem != nil && n.Elem.Space == NSSID && n.Elem.Local == "stanza-id" {
			return true
		}
	}
	return false
}

// StripStanzaIDs removes every <stanza-id/> claiming to be by the given JID: only the archive
// itself may name its messages (XEP-0359 §3.1), so a sender cannot forge one.
func StripStanzaIDs(msg *stanza.Element, by string) {
	msg.Children = slices.DeleteFunc(msg.Children, func(n stanza.Node) bool {
		return n.Elem != nil && n.Elem.Space == NSSID && n.Elem.Local == "stanza-id" && sameBy(n.Elem.Attr("by"), by)
	})
}

func sameBy(s, by string) bool {
	if s == by {
		return true
	}
	j, err := jid.Parse(s)
	return err == nil && j.String() == by
}
