// Package register implements XEP-0077: In-Band Registration for the server's own accounts:
// account creation before authentication (off by default, rate-limited per IP address),
// password change (§3.3) and account removal (§3.2), which also deletes everything stored for
// the account. Accounts are written to the listener's credential store when it implements
// auth.Writer (file:// and digest:// stores do).
//
// Besides the fixed username and password fields, registration and password changes take
// XEP-0004 data forms (§5, FORM_TYPE jabber:iq:register and jabber:iq:register:changepassword),
// which the registration form offers alongside the fields.
package register

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/auth"
	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/modules/mam"
	"impetus/internal/modules/roster"
	"impetus/internal/stanza"
)

// Namespaces of XEP-0077.
const (
	NS        = "jabber:iq:register"
	NSFeature = "http://jabber.org/features/iq-register"
	NSData    = "jabber:x:data"
	// FormChange is the FORM_TYPE of a password change form (XEP-0077 §8.5).
	FormChange = NS + ":changepassword"
)

// Defaults of the register scope.
const (
	DefaultPerIP        = 3
	DefaultWindow       = time.Hour
	DefaultMinPassword  = 8
	DefaultMaxTracked   = 10000
	DefaultInstructions = "Choose a username and password to register with this server."
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "register",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0077 in-band registration (Impetus)",
		Options: []config.OptionSpec{
			{Name: "allow_registration", Type: config.TypeBool, Default: "false", Doc: "let unauthenticated clients create accounts (Impetus)"},
			{Name: "registrations_per_ip", Type: config.TypeInt, Default: fmt.Sprint(DefaultPerIP), Doc: "registration attempts one IP address may make per registration_window; 0 means no bound (Impetus)"},
			{Name: "registration_window", Type: config.TypeDuration, Default: "3600", Doc: "seconds over which registrations_per_ip counts (Impetus)"},
			{Name: "max_tracked_ips", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxTracked), Doc: "addresses whose attempts are remembered; when full, new addresses are refused until entries expire (Impetus)"},
			{Name: "min_password_length", Type: config.TypeInt, Default: fmt.Sprint(DefaultMinPassword), Doc: "shortest password accepted for a new account or a password change, in characters (Impetus)"},
			{Name: "allow_password_change", Type: config.TypeBool, Default: "true", Doc: "let users change their password in band (Impetus)"},
			{Name: "allow_remove", Type: config.TypeBool, Default: "true", Doc: "let users remove their account in band (Impetus)"},
			{Name: "instructions", Type: config.TypeString, Default: DefaultInstructions, Doc: "text shown to clients asking how to register (Impetus)"},
		},
	})
	module.Register("register", func() module.Module { return New() })
}

// Config is the register scope, decoded.
type Config struct {
	Allow        bool          `conf:"allow_registration"`
	PerIP        int           `conf:"registrations_per_ip"`
	Window       time.Duration `conf:"registration_window"`
	MaxTracked   int           `conf:"max_tracked_ips"`
	MinPassword  int           `conf:"min_password_length"`
	AllowChange  bool          `conf:"allow_password_change"`
	AllowRemove  bool          `conf:"allow_remove"`
	Instructions string        `conf:"instructions"`
}

// Register is the registration module of one hosted domain.
type Register struct {
	Config
	// Now is the clock; the zero value means time.Now.
	Now func() time.Time

	h *module.Host

	mu       sync.Mutex
	attempts map[string][]time.Time // IP address → attempts within the window
}

// New returns a module with the default settings: registration off, changes allowed.
func New() *Register {
	return &Register{Config: Config{PerIP: DefaultPerIP, Window: DefaultWindow, MaxTracked: DefaultMaxTracked,
		MinPassword: DefaultMinPassword, AllowChange: true, AllowRemove: true, Instructions: DefaultInstructions}}
}

// Provision implements module.Module.
func (r *Register) Provision(h *module.Host) error {
	r.h = h
	if h.Config != nil && h.Config.Root != nil {
		if secs := h.Config.Sections("register"); len(secs) > 0 {
			if err := secs[0].Decode(&r.Config); err != nil {
				return fmt.Errorf("register: %w", err)
			}
		}
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	r.attempts = make(map[string][]time.Time)
	h.AddFeature(NS)
	h.HandleIQ(module.ToServer, stanza.Get, NS, "query", r.info)
	h.HandleIQ(module.ToServer, stanza.Set, NS, "query", r.change)
	// Clients send removal without 'to' (§3.2), which addresses their own account.
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "query", r.own(r.info))
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "query", r.own(r.change))
	if r.Allow {
		if _, ok := r.writer(); !ok {
			h.Log.Warn("register: in-band registration is on but the credential store is read-only; registrations will fail")
		}
		h.AddPreAuthFeature(stanza.NewElement(NSFeature, "register"))
		h.HandlePreAuthIQ(NS, "query", r.preAuth)
	}
	return nil
}

func (r *Register) writer() (auth.Writer, bool) {
	if r.h.Auth == nil {
		return nil, false
	}
	st := r.h.Auth()
	w, ok := st.(auth.Writer)
	return w, ok
}

// preAuth answers registration requests of unauthenticated clients (§3.1).
func (r *Register) preAuth(ctx context.Context, remote string, iq *stanza.Element) (*stanza.Element, error) {
	q := iq.FirstElement()
	if iq.Attr("type") == stanza.Get {
		res := stanza.NewElement(NS, "query")
		if r.Instructions != "" {
			res.AddChild(stanza.NewElement(NS, "instructions").AddText(r.Instructions))
		}
		res.AddChild(stanza.NewElement(NS, "username"))
		res.AddChild(stanza.NewElement(NS, "password"))
		res.AddChild(registrationForm(r.Instructions))
		return res, nil
	}
	if q.Child(NS, "remove") != nil {
		// Only a registered entity can cancel (§3.2 table: unexpected-request).
		return nil, stanza.NewError("unexpected-request", "authenticate before removing an account")
	}
	if !r.admit(remote) {
		return nil, stanza.NewError("not-acceptable", "too many registrations from this address; try again later")
	}
	user, pw, err := credentials(q, NS)
	if err != nil {
		return nil, err
	}
	if user == "" || pw == "" {
		return nil, stanza.NewError("not-acceptable", "username and password are required")
	}
	local, err := auth.PrepareUsername(user)
	if err != nil {
		return nil, stanza.NewError("not-acceptable", "the username is not valid")
	}
	if _, err := jid.New(local, r.h.Domain, ""); err != nil {
		return nil, stanza.NewError("not-acceptable", "the username is not valid")
	}
	if err := r.checkPassword(pw); err != nil {
		return nil, err
	}
	w, ok := r.writer()
	if !ok {
		return nil, stanza.NewError("not-allowed", "accounts cannot be created here")
	}
	if r.h.Accounts != nil {
		exists, err := r.h.Accounts.Exists(ctx, local, r.h.Domain)
		if err != nil {
			return nil, err
		}
		if exists {
			return nil, stanza.NewError("conflict", "the username is taken")
		}
	}
	switch err := w.Create(ctx, local, r.h.Domain, pw); {
	case errors.Is(err, auth.ErrExists):
		return nil, stanza.NewError("conflict", "the username is taken")
	case err != nil:
		return nil, err
	}
	r.h.Log.Info("register: account created", "user", local+"@"+r.h.Domain, "remote", remote)
	return nil, nil
}

func (r *Register) checkPassword(pw string) error {
	if _, err := auth.PreparePassword(pw); err != nil {
		return stanza.NewError("not-acceptable", "the password is not valid")
	}
	if len([]rune(pw)) < r.MinPassword {
		return stanza.NewError("not-acceptable", fmt.Sprintf("the password needs at least %d characters", r.MinPassword))
	}
	return nil
}

// admit counts a registration attempt from remote and reports whether it is within the limit.
func (r *Register) admit(remote string) bool {
	if r.PerIP <= 0 {
		return true
	}
	ip := remote
	if host, _, err := net.SplitHostPort(remote); err == nil {
		ip = host
	}
	now := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	recent := func(ts []time.Time) []time.Time {
		out := ts[:0]
		for _, t := range ts {
			if now.Sub(t) < r.Window {
				out = append(out, t)
			}
		}
		return out
	}
	ts := recent(r.attempts[ip])
	if len(ts) == 0 {
		delete(r.attempts, ip)
		if r.MaxTracked > 0 && len(r.attempts) >= r.MaxTracked {
			for k, v := range r.attempts {
				if v = recent(v); len(v) == 0 {
					delete(r.attempts, k)
				} else {
					r.attempts[k] = v
				}
			}
			if len(r.attempts) >= r.MaxTracked {
				return false
			}
		}
	}
	if len(ts) >= r.PerIP {
		r.attempts[ip] = ts
		return false
	}
	r.attempts[ip] = append(ts, now)
	return true
}

// registrationForm is the data form offered with the registration fields (§5): the same
// username and password, for clients that prefer forms.
func registrationForm(instructions string) *stanza.Element {
	x := stanza.NewElement(NSData, "x", stanza.Attr{Name: "type", Value: "form"})
	x.AddChild(stanza.NewElement(NSData, "title").AddText("Account registration"))
	if instructions != "" {
		x.AddChild(stanza.NewElement(NSData, "instructions").AddText(instructions))
	}
	x.AddChild(stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: "FORM_TYPE"}, stanza.Attr{Name: "type", Value: "hidden"}).
		AddChild(stanza.NewElement(NSData, "value").AddText(NS)))
	for _, f := range [][3]string{{"username", "text-single", "Username"}, {"password", "text-private", "Password"}} {
		x.AddChild(stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: f[0]}, stanza.Attr{Name: "type", Value: f[1]}, stanza.Attr{Name: "label", Value: f[2]}).
			AddChild(stanza.NewElement(NSData, "required")))
	}
	return x
}

// credentials reads the username and password of a request: from its submitted data form
// when there is one (whose FORM_TYPE, when given, must be formType or jabber:iq:register),
// else from the fixed fields. A request with both is refused, as §5 forbids sending both.
func credentials(q *stanza.Element, formType string) (user, pw string, err error) {
	x := q.Child(NSData, "x")
	if x == nil {
		return text(q, "username"), text(q, "password"), nil
	}
	if q.Child(NS, "username") != nil || q.Child(NS, "password") != nil {
		return "", "", stanza.NewError("bad-request", "send either the data form or the registration fields")
	}
	if x.Attr("type") != "submit" {
		return "", "", stanza.NewError("bad-request", "the data form must be submitted")
	}
	fields := map[string]string{}
	for f := range x.Elements() {
		if f.Space != NSData || f.Local != "field" {
			continue
		}
		if v := f.Child(NSData, "value"); v != nil {
			fields[f.Attr("var")] = v.Text()
		}
	}
	if ft := fields["FORM_TYPE"]; ft != "" && ft != formType && ft != NS {
		return "", "", stanza.NewError("bad-request", "unexpected FORM_TYPE "+ft)
	}
	return fields["username"], fields["password"], nil
}

func text(q *stanza.Element, name string) string {
	if c := q.Child(NS, name); c != nil {
		return c.Text()
	}
	return ""
}

// own restricts fn to requests addressed to the requester's own account.
func (r *Register) own(fn module.IQHandler) module.IQHandler {
	return func(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
		if !iq.To.Equal(iq.From.Bare()) {
			return nil, stanza.ErrServiceUnavailable
		}
		return fn(ctx, iq)
	}
}

// info tells an authenticated user it is registered (§3.1, "registered" case).
func (r *Register) info(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.From.Localpart() == "" || iq.From.Domainpart() != r.h.Domain {
		return nil, stanza.ErrServiceUnavailable
	}
	res := stanza.NewElement(NS, "query")
	res.AddChild(stanza.NewElement(NS, "registered"))
	res.AddChild(stanza.NewElement(NS, "username").AddText(iq.From.Localpart()))
	return res, nil
}

// change handles password changes (§3.3) and account removal (§3.2) by an account's owner.
func (r *Register) change(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.From.Localpart() == "" || iq.From.Domainpart() != r.h.Domain || iq.Session == nil {
		return nil, stanza.NewError("unexpected-request", "only this server's own users may do that")
	}
	if iq.Payload.Child(NS, "remove") != nil {
		if iq.Payload.ElementCount() != 1 {
			return nil, stanza.NewError("bad-request", "remove must be the only child")
		}
		return nil, r.remove(ctx, iq)
	}
	if !r.AllowChange {
		return nil, stanza.NewError("not-allowed", "password changes are disabled")
	}
	if t, ok := iq.Session.(interface{ TLSState() *tls.ConnectionState }); ok && t.TLSState() == nil && !r.insecureOK() {
		return nil, stanza.NewError("not-authorized", "change passwords over an encrypted stream")
	}
	user, pw, err := credentials(iq.Payload, FormChange)
	if err != nil {
		return nil, err
	}
	if user == "" || pw == "" {
		// An empty password never replaces the current one (§3.3).
		return nil, stanza.NewError("bad-request", "username and password are required")
	}
	if local, err := auth.PrepareUsername(user); err != nil || local != iq.From.Localpart() {
		return nil, stanza.NewError("bad-request", "the username is not yours")
	}
	if err := r.checkPassword(pw); err != nil {
		return nil, err
	}
	w, ok := r.writer()
	if !ok {
		return nil, stanza.NewError("not-allowed", "the credential store is read-only")
	}
	if err := w.SetPassword(ctx, iq.From.Localpart(), r.h.Domain, pw); err != nil {
		if errors.Is(err, auth.ErrNotFound) {
			return nil, stanza.NewError("not-allowed", "this account's password is not kept in the server's store")
		}
		return nil, err
	}
	r.h.Log.Info("register: password changed", "user", iq.From.Bare().String())
	return nil, nil
}

// insecureOK reports whether the configuration lets credentials travel in clear.
func (r *Register) insecureOK() bool {
	x := r.h.Config
	return x == nil || x.Listener == nil || x.Listener.Options.AllowPlainWithoutTLS
}

// remove cancels the registration (§3.2): the account leaves the credential store, its
// contacts lose their subscriptions, its data is deleted and its sessions end with a
// not-authorized stream error.
func (r *Register) remove(ctx context.Context, iq *module.IQ) error {
	if !r.AllowRemove {
		return stanza.NewError("not-allowed", "accounts cannot be removed in band")
	}
	w, ok := r.writer()
	if !ok {
		return stanza.NewError("not-allowed", "the credential store is read-only")
	}
	bare := iq.From.Bare()
	if err := w.Delete(ctx, bare.Localpart(), r.h.Domain); err != nil {
		if errors.Is(err, auth.ErrNotFound) {
			return stanza.NewError("not-allowed", "this account is not kept in the server's store")
		}
		return err
	}
	r.cancelSubscriptions(ctx, bare)
	if m := mam.ForHost(r.h); m != nil {
		// Archive copies still queued for the group commit would otherwise land after the
		// account's data is gone.
		if err := m.Flush(ctx); err != nil {
			r.h.Log.Warn("register: flushing queued archive copies of a removed account", "user", bare.String(), "err", err)
		}
	}
	if err := r.h.Storage.DeleteUser(ctx, bare.String()); err != nil {
		r.h.Log.Error("register: deleting the data of a removed account", "user", bare.String(), "err", err)
	}
	r.h.Log.Info("register: account removed", "user", bare.String())
	// The result goes out before the streams close; the core's own copy finds them closed.
	iq.Session.Send(stanza.ResultReply(iq.El, nil))
	for _, s := range r.h.Router.Sessions(bare) {
		if c, ok := s.(interface{ Close(*stanza.StreamError) }); ok {
			c.Close(stanza.NewStreamError("not-authorized", "the account was removed"))
		}
	}
	return nil
}

// cancelSubscriptions tells every contact that the subscriptions with the account are gone.
func (r *Register) cancelSubscriptions(ctx context.Context, bare jid.JID) {
	ro := roster.ForHost(r.h)
	if ro == nil {
		return
	}
	items, _, err := ro.Store().All(ctx, bare.String())
	if err != nil {
		r.h.Log.Error("register: reading the roster of a removed account", "user", bare.String(), "err", err)
		return
	}
	for i := range items {
		it := &items[i]
		if it.HasTo() || it.Ask {
			r.send(ctx, roster.Subscription(bare.String(), it.JID, "unsubscribe"))
		}
		if it.HasFrom() || it.PendingIn {
			r.send(ctx, roster.Subscription(bare.String(), it.JID, "unsubscribed"))
		}
	}
}

func (r *Register) send(ctx context.Context, el *stanza.Element) {
	if err := r.h.Send(ctx, el); err != nil {
		r.h.Log.Debug("register: stanza not routable", "to", el.Attr("to"), "err", err)
	}
}

var _ module.Module = (*Register)(nil)
