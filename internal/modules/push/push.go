// Package push implements XEP-0357: Push Notifications. A client registers an App Server's
// push service (a JID and a node, with publish options such as a secret); when a message
// arrives for the account while it has no connected client — the user is offline, or the
// session waits for XEP-0198 resumption — the server publishes a urn:xmpp:push:summary
// notification to every registration with a pubsub publish iq. Registrations are stored, so
// they survive restarts.
package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Namespaces of XEP-0357 and what its notifications are made of.
const (
	NS         = "urn:xmpp:push:0"
	NSSummary  = "urn:xmpp:push:summary"
	NSPubSub   = "http://jabber.org/protocol/pubsub"
	NSData     = "jabber:x:data"
	nsPubOpts  = "http://jabber.org/protocol/pubsub#publish-options"
	StoreName  = "push"
	keySep     = "\x1e" // between service JID and node in a map key; neither contains it
	maxFormLen = 4096
)

// Defaults of the push scope.
const (
	DefaultMaxRegistrations = 10
	DefaultMaxBody          = 256
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "push",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0357 push notifications",
		Options: []config.OptionSpec{
			{Name: "enabled", Type: config.TypeBool, Default: "true", Doc: "let clients register push services (Impetus)"},
			{Name: "include_sender", Type: config.TypeBool, Default: "true", Doc: "send the last message's sender in summaries (Impetus)"},
			{Name: "include_body", Type: config.TypeBool, Default: "false", Doc: "send the last message's body in summaries; off keeps message text away from App Servers (Impetus)"},
			{Name: "max_body", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxBody), Doc: "characters of the body kept in a summary (Impetus)"},
			{Name: "max_registrations", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxRegistrations), Doc: "push registrations one account may hold (Impetus)"},
		},
	})
	module.Register("push", func() module.Module { return &Push{} })
}

// Config is the push scope, decoded.
type Config struct {
	Enabled          bool `conf:"enabled"`
	IncludeSender    bool `conf:"include_sender"`
	IncludeBody      bool `conf:"include_body"`
	MaxBody          int  `conf:"max_body"`
	MaxRegistrations int  `conf:"max_registrations"`
}

// DefaultConfig is the push scope with nothing set.
func DefaultConfig() Config {
	return Config{Enabled: true, IncludeSender: true, MaxBody: DefaultMaxBody, MaxRegistrations: DefaultMaxRegistrations}
}

// Decode reads the push scope of cfg.
func Decode(cfg *config.Config) (Config, error) {
	out := DefaultConfig()
	if cfg == nil || cfg.Root == nil {
		return out, nil
	}
	if secs := cfg.Sections("push"); len(secs) > 0 {
		if err := secs[0].Decode(&out); err != nil {
			return out, err
		}
	}
	if out.MaxBody <= 0 {
		out.MaxBody = DefaultMaxBody
	}
	if out.MaxRegistrations <= 0 {
		out.MaxRegistrations = DefaultMaxRegistrations
	}
	return out, nil
}

// registration is one stored push registration.
type registration struct {
	JID  string `json:"jid"`
	Node string `json:"node"`
	// Options are the fields of the publish-options form, FORM_TYPE included.
	Options []formField `json:"options,omitempty"`
}

type formField struct {
	Var    string   `json:"var"`
	Values []string `json:"values"`
}

// Push is the push notification module of one hosted domain.
type Push struct {
	cfg  Config
	set  bool
	h    *module.Host
	regs storage.Map

	mu sync.Mutex
	// pending counts the messages each account received since a client was last bound, for
	// the summary's message-count.
	pending map[string]int
}

// SetConfig replaces the configuration before Provision (tests).
func (p *Push) SetConfig(c Config) { p.cfg, p.set = c, true }

// Provision implements module.Module.
func (p *Push) Provision(h *module.Host) error {
	if !p.set {
		c, err := Decode(h.Config)
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		p.cfg = c
	}
	if !p.cfg.Enabled {
		return nil
	}
	p.h = h
	p.regs = h.Storage.Map(StoreName)
	p.pending = make(map[string]int)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "enable", p.enable)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "disable", p.disable)
	h.AddAccountFeature(NS)
	// Above offline storage, which handles the message: the notification goes out and the
	// message is still stored.
	h.Hook(module.MessageOffline, 50, p.notifyHook)
	h.Hook(module.MessageHibernated, 0, p.notifyHook)
	h.OnSessionBound(func(_ context.Context, s module.Session) {
		p.mu.Lock()
		delete(p.pending, s.JID().Bare().String())
		p.mu.Unlock()
	})
	return nil
}

func regKey(service, node string) string { return service + keySep + node }

// enable stores a registration (XEP-0357 §5).
func (p *Push) enable(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.From.Bare().Equal(iq.To) {
		return nil, stanza.NewError("forbidden", "only the account itself registers push services")
	}
	svc, err := jid.Parse(iq.Payload.Attr("jid"))
	if err != nil || iq.Payload.Attr("jid") == "" {
		return nil, stanza.NewError("bad-request", "enable needs the push service's jid")
	}
	node := iq.Payload.Attr("node")
	if node == "" || !utf8.ValidString(node) || strings.ContainsAny(node, keySep+"\x00") {
		return nil, stanza.NewError("bad-request", "enable needs a node")
	}
	r := registration{JID: svc.String(), Node: node}
	if x := iq.Payload.Child(NSData, "x"); x != nil {
		if formType(x) != nsPubOpts {
			return nil, stanza.NewError("bad-request", "the form must be pubsub#publish-options")
		}
		size := 0
		for f := range x.Elements() {
			if f.Space != NSData || f.Local != "field" || f.Attr("var") == "" {
				continue
			}
			ff := formField{Var: f.Attr("var")}
			for v := range f.Elements() {
				if v.Space == NSData && v.Local == "value" {
					ff.Values = append(ff.Values, v.Text())
					size += len(v.Text())
				}
			}
			size += len(ff.Var)
			r.Options = append(r.Options, ff)
		}
		if size > maxFormLen {
			return nil, stanza.NewError("not-acceptable", "the publish options are too large")
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	user := iq.To.Bare().String()
	key := regKey(r.JID, r.Node)
	err = p.regs.Update(ctx, user, func(tx storage.MapTx) error {
		all, err := tx.All()
		if err != nil {
			return err
		}
		if _, exists := all[key]; !exists && len(all) >= p.cfg.MaxRegistrations {
			return stanza.NewError("resource-constraint", "too many push registrations")
		}
		return tx.Set(key, data)
	})
	if err != nil {
		return nil, err
	}
	return nil, nil
}

// disable removes one registration, or every registration with the service when no node is
// given (XEP-0357 §6).
func (p *Push) disable(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.From.Bare().Equal(iq.To) {
		return nil, stanza.NewError("forbidden", "only the account itself removes push services")
	}
	svc, err := jid.Parse(iq.Payload.Attr("jid"))
	if err != nil || iq.Payload.Attr("jid") == "" {
		return nil, stanza.NewError("bad-request", "disable needs the push service's jid")
	}
	node := iq.Payload.Attr("node")
	user := iq.To.Bare().String()
	err = p.regs.Update(ctx, user, func(tx storage.MapTx) error {
		if node != "" {
			return tx.Delete(regKey(svc.String(), node))
		}
		all, err := tx.All()
		if err != nil {
			return err
		}
		for k := range all {
			if strings.HasPrefix(k, svc.String()+keySep) {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return nil, err
}

// notifyHook sends summaries for a message the account's clients will not see now.
func (p *Push) notifyHook(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	el := st.El
	if el.Local != "message" || el.Attr("type") == "error" || el.Attr("type") == "groupchat" && el.Child(stanza.NSClient, "body") == nil {
		return module.Continue, nil
	}
	body := el.Child(stanza.NSClient, "body")
	if body == nil {
		// Chat states and receipts are not worth waking a phone for.
		return module.Continue, nil
	}
	user := st.To.Bare()
	if err := p.Notify(ctx, user, el.Attr("from"), body.Text()); err != nil {
		p.h.Log.Warn("push notification failed", "user", user.String(), "err", err)
	}
	return module.Continue, nil
}

// Notify publishes a summary for a new message to every registration of user.
func (p *Push) Notify(ctx context.Context, user jid.JID, sender, body string) error {
	all, err := p.regs.All(ctx, user.String())
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return nil
	}
	p.mu.Lock()
	p.pending[user.String()]++
	count := p.pending[user.String()]
	p.mu.Unlock()
	var errs []error
	for _, data := range all {
		var r registration
		if err := json.Unmarshal(data, &r); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := p.h.Send(ctx, p.publish(user, r, count, sender, body)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// publish builds the pubsub publish of XEP-0357 §7 for one registration.
func (p *Push) publish(user jid.JID, r registration, count int, sender, body string) *stanza.Element {
	form := stanza.NewElement(NSData, "x", stanza.Attr{Name: "type", Value: "submit"})
	form.AddChild(field("FORM_TYPE", NSSummary))
	form.AddChild(field("message-count", strconv.Itoa(count)))
	if p.cfg.IncludeSender && sender != "" {
		form.AddChild(field("last-message-sender", sender))
	}
	if p.cfg.IncludeBody && body != "" {
		form.AddChild(field("last-message-body", truncate(body, p.cfg.MaxBody)))
	}
	publish := stanza.NewElement(NSPubSub, "publish", stanza.Attr{Name: "node", Value: r.Node}).
		AddChild(stanza.NewElement(NSPubSub, "item").
			AddChild(stanza.NewElement(NS, "notification").AddChild(form)))
	ps := stanza.NewElement(NSPubSub, "pubsub").AddChild(publish)
	if len(r.Options) > 0 {
		x := stanza.NewElement(NSData, "x", stanza.Attr{Name: "type", Value: "submit"})
		for _, f := range r.Options {
			fe := stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: f.Var})
			for _, v := range f.Values {
				fe.AddChild(stanza.NewElement(NSData, "value").AddText(v))
			}
			x.AddChild(fe)
		}
		ps.AddChild(stanza.NewElement(NSPubSub, "publish-options").AddChild(x))
	}
	return stanza.NewElement(stanza.NSClient, "iq",
		stanza.Attr{Name: "type", Value: stanza.Set},
		stanza.Attr{Name: "from", Value: user.String()},
		stanza.Attr{Name: "to", Value: r.JID},
		stanza.Attr{Name: "id", Value: "push-" + randomID()}).AddChild(ps)
}

func field(name, value string) *stanza.Element {
	return stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: name}).
		AddChild(stanza.NewElement(NSData, "value").AddText(value))
}

func formType(x *stanza.Element) string {
	for f := range x.Elements() {
		if f.Local == "field" && f.Attr("var") == "FORM_TYPE" {
			if v := f.Child(NSData, "value"); v != nil {
				return v.Text()
			}
		}
	}
	return ""
}

// truncate keeps the first n characters of s.
func truncate(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var _ module.Module = (*Push)(nil)
