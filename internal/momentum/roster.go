// Package momentum imports data of the Momentum messaging platform into Impetus storage.
//
// ImportRosters reads Momentum's roster documents (RFC 6121 §2 rosters with their §3
// subscription state) and writes them through the roster package's store, so imported items are
// encoded exactly as the roster module writes them.
//
// # Roster files
//
// A roster document maps each contact's bare JID to its item:
//
//	{"juliet@example.com": {"name": "Juliet", "groups": ["Friends"], "subscription": "both",
//	                        "pending_requests": {"in": false, "out": true}}}
//
// "subscription" is "none", "to", "from" or "both" (absent means "none"). "pending_requests" is
// optional; its keys "in" (also "incoming", "inbound") mark an inbound request awaiting the
// owner's answer and "out" (also "outgoing", "outbound", "ask") an outbound request awaiting the
// contact's (ask='subscribe'); a value counts when it is true, a non-empty string or a non-empty
// object. Unknown item fields and pending_requests keys are ignored. "approved": true, when
// present, is a subscription pre-approval.
//
// A file holds one JSON value, or several one after another (JSON Lines), each of which is
// either
//
//   - an object of owners: {"romeo@example.net": {roster document}, …}, one owner or many; or
//   - a Riak export: an array of {"key": owner, "value": roster document} objects, where the
//     value may also be a string holding the document's JSON; other fields ("bucket", …) are
//     ignored. A single such object outside an array is accepted too.
//
// Owners and contacts must be valid JIDs; owners are reduced to bare JIDs. Every file is read
// and checked before anything is written, so a malformed file writes nothing. Each owner's
// roster is then written in one transaction: imported contacts replace entries for the same
// contacts, other entries are kept, the roster version moves, and the roster size limit of the
// roster module does not apply.
package momentum

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"mellium.im/xmpp/jid"

	"impetus/internal/modules/roster"
	"impetus/internal/storage"
)

// ImportRosters imports the roster files into backend and returns the number of roster items
// written.
func ImportRosters(ctx context.Context, backend storage.Backend, files []string) (n int, err error) {
	rosters := map[string]map[string]roster.Item{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		if err := parseFile(data, rosters); err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
	}
	owners := make([]string, 0, len(rosters))
	for o := range rosters {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	store := roster.NewStore(backend)
	for _, o := range owners {
		items := make([]roster.Item, 0, len(rosters[o]))
		for _, it := range rosters[o] {
			items = append(items, it)
		}
		sort.Slice(items, func(i, j int) bool { return items[i].JID < items[j].JID })
		if err := store.Import(ctx, o, items); err != nil {
			return n, fmt.Errorf("roster of %s: %w", o, err)
		}
		n += len(items)
	}
	return n, nil
}

// parseFile adds the rosters of one file to rosters.
func parseFile(data []byte, rosters map[string]map[string]roster.Item) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if err := parseValue(v, rosters); err != nil {
			return err
		}
	}
}

func parseValue(v json.RawMessage, rosters map[string]map[string]roster.Item) error {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '[' {
		var entries []json.RawMessage
		if err := json.Unmarshal(v, &entries); err != nil {
			return err
		}
		for i, e := range entries {
			if err := parseRiak(e, rosters); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
		}
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return fmt.Errorf("expected an object or an array: %w", err)
	}
	if _, ok := obj["key"]; ok {
		if _, ok := obj["value"]; ok {
			return parseRiak(v, rosters)
		}
	}
	for owner, doc := range obj {
		if err := addRoster(owner, doc, rosters); err != nil {
			return err
		}
	}
	return nil
}

// parseRiak reads one {"key": owner, "value": document} entry.
func parseRiak(e json.RawMessage, rosters map[string]map[string]roster.Item) error {
	var entry struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(e, &entry); err != nil {
		return err
	}
	if entry.Key == "" {
		return errors.New("entry without key")
	}
	doc := bytes.TrimSpace(entry.Value)
	if len(doc) > 0 && doc[0] == '"' {
		var s string
		if err := json.Unmarshal(doc, &s); err != nil {
			return err
		}
		doc = []byte(s)
	}
	return addRoster(entry.Key, doc, rosters)
}

// momentumItem is one contact of a Momentum roster document.
type momentumItem struct {
	Name         string                     `json:"name"`
	Groups       []string                   `json:"groups"`
	Subscription string                     `json:"subscription"`
	Approved     bool                       `json:"approved"`
	Pending      map[string]json.RawMessage `json:"pending_requests"`
}

func addRoster(owner string, doc json.RawMessage, rosters map[string]map[string]roster.Item) error {
	oj, err := jid.Parse(owner)
	if err != nil || oj.Localpart() == "" {
		return fmt.Errorf("owner %q is not an account JID", owner)
	}
	ownerKey := oj.Bare().String()
	var contacts map[string]momentumItem
	if err := json.Unmarshal(doc, &contacts); err != nil {
		return fmt.Errorf("roster of %s: %w", owner, err)
	}
	r := rosters[ownerKey]
	if r == nil {
		r = make(map[string]roster.Item, len(contacts))
		rosters[ownerKey] = r
	}
	for c, mi := range contacts {
		cj, err := jid.Parse(c)
		if err != nil {
			return fmt.Errorf("roster of %s: contact %q is not a valid JID", owner, c)
		}
		if cj.Bare().Equal(oj.Bare()) {
			// The roster module refuses the owner's own JID as an item; so does the import.
			continue
		}
		it := roster.Item{JID: cj.String(), Name: mi.Name, Approved: mi.Approved}
		switch mi.Subscription {
		case "", roster.None:
			it.Subscription = roster.None
		case roster.To, roster.From, roster.Both:
			it.Subscription = mi.Subscription
		default:
			return fmt.Errorf("roster of %s: contact %s: invalid subscription %q", owner, c, mi.Subscription)
		}
		seen := map[string]bool{}
		for _, g := range mi.Groups {
			if g != "" && !seen[g] {
				seen[g] = true
				it.Groups = append(it.Groups, g)
			}
		}
		for k, v := range mi.Pending {
			switch k {
			case "in", "incoming", "inbound":
				it.PendingIn = it.PendingIn || truthy(v)
			case "out", "outgoing", "outbound", "ask":
				it.Ask = it.Ask || truthy(v)
			}
		}
		// The state machine never has a pending request in the direction already subscribed.
		if it.HasFrom() {
			it.PendingIn = false
		}
		if it.HasTo() {
			it.Ask = false
		}
		r[it.JID] = it
	}
	return nil
}

// truthy reports whether a pending_requests value marks a pending request.
func truthy(v json.RawMessage) bool {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return false
	}
	switch t := x.(type) {
	case bool:
		return t
	case string:
		return t != ""
	case float64:
		return t != 0
	case map[string]any:
		return len(t) > 0
	case []any:
		return len(t) > 0
	}
	return false
}
