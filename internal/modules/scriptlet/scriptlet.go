// Package scriptlet implements Momentum's scriptlet module for XMPP: Lua scripts, configured in
// a scriptlet scope, whose handler tables see stanzas from clients and from other servers and
// stanzas about to be delivered, and may pass, drop, rewrite or answer them.
//
// Scripts run in gopher-lua states that hold only the sandboxed libraries and the msys.xmpp API.
// Each call of a handler runs under a budget of VM instructions, wall-clock time and allocated
// bytes; a handler that fails or runs out of budget is logged and the stanza continues as if it
// had returned CONT. States are not safe for concurrent use, so each host keeps a small pool of
// them, each loaded with every script, and a call borrows one.
//
// Without a scriptlet scope the module registers nothing and costs nothing.
package scriptlet

import (
	"context"
	"fmt"
	"strings"
	"sync"

	lua "github.com/yuin/gopher-lua"
	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// HookPriority is the priority of the module's hooks: above the built-in modules, so scripts
// see a stanza before presence or offline storage act on it.
const HookPriority = 1000

// maxSendDepth bounds how deep stanzas sent by scripts may cause further script sends, so two
// handlers answering each other cannot recurse without end.
const maxSendDepth = 4

func init() { module.Register("scriptlet", func() module.Module { return new(Module) }) }

// Module is the scriptlet module of one hosted domain.
type Module struct {
	// Config, when set, is used instead of the scriptlet scope of the host's configuration
	// (tests set it; the server leaves it nil).
	Config *Config
	// Hosted tells whether a domain is served here, to tell stanzas from other servers from
	// local ones; nil means the configuration's hosted domains, or only the host's own domain.
	Hosted func(domain string) bool

	h    *module.Host
	e    *engine
	pres presenceTracker
}

// Provision implements module.Module.
func (m *Module) Provision(h *module.Host) error {
	m.h = h
	cfg := m.Config
	if cfg == nil {
		var err error
		if cfg, err = Decode(h.Config); err != nil {
			return err
		}
	}
	if cfg == nil {
		return nil
	}
	if !cfg.Enabled {
		h.Log.Info("scriptlet: disabled; no script runs")
		return nil
	}
	loadable := 0
	for _, s := range cfg.Scripts {
		if s.Builtin != "" {
			h.Log.Warn("scriptlet: script not loaded: "+s.Builtin, "script", s.Name, "source", s.Source)
			continue
		}
		loadable++
	}
	if loadable == 0 {
		return nil
	}
	if m.Hosted == nil {
		m.Hosted = m.hostedFromConfig()
	}
	m.pres.last = make(map[router.Session]presence)
	e, err := newEngine(cfg, &env{domain: h.Domain, router: h.Router, hosted: m.Hosted, pres: &m.pres}, h.Log)
	if err != nil {
		return err
	}
	m.e = e
	if e.hooks[ClientMessageRecv] {
		h.Hook(module.MessageIn, HookPriority, m.messageIn)
	}
	if e.hooks[ServerMessageRecv] || e.hooks[MessageDeliver] {
		h.Hook(module.MessageDeliver, HookPriority, m.messageDeliver)
	}
	// Presence from clients is always watched: xmpp.online reports its show and status.
	h.Hook(module.PresenceIn, HookPriority, m.presenceIn)
	h.OnSessionClosed(func(_ context.Context, s module.Session) { m.pres.forget(s) })
	if e.hooks[ServerPresenceRecv] || e.hooks[PresenceDeliver] {
		h.Hook(module.PresenceDeliver, HookPriority, m.presenceDeliver)
	}
	if e.hooks[ClientIQRecv] {
		h.Hook(module.IQIn, HookPriority, m.iqIn)
	}
	h.Log.Info("scriptlet: scripts loaded", "scripts", loadable, "states", cap(e.pool))
	return nil
}

// Stop implements module.Stopper.
func (m *Module) Stop() error {
	if m.e != nil {
		m.e.close()
	}
	return nil
}

func (m *Module) hostedFromConfig() func(string) bool {
	set := map[string]bool{m.h.Domain: true}
	if m.h.Config != nil {
		for _, d := range m.h.Config.HostedDomains() {
			set[d] = true
		}
	}
	return func(d string) bool { return set[d] }
}

func (m *Module) messageIn(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	return m.run(ctx, st, true, ClientMessageRecv)
}

func (m *Module) iqIn(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	return m.run(ctx, st, true, ClientIQRecv)
}

func (m *Module) presenceIn(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	v, err := module.Continue, error(nil)
	if m.e.hooks[ClientPresenceRecv] {
		v, err = m.run(ctx, st, true, ClientPresenceRecv)
	}
	if v == module.Continue && st.Session != nil && st.El.Attr("to") == "" {
		m.pres.update(st.Session, st.El)
	}
	return v, err
}

func (m *Module) messageDeliver(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if m.fromServer(st) {
		return m.run(ctx, st, false, ServerMessageRecv, MessageDeliver)
	}
	return m.run(ctx, st, false, MessageDeliver)
}

func (m *Module) presenceDeliver(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if m.fromServer(st) {
		return m.run(ctx, st, false, ServerPresenceRecv, PresenceDeliver)
	}
	return m.run(ctx, st, false, PresenceDeliver)
}

// fromServer tells a stanza that came from another server: no local session sent it and its
// sender is not on a domain hosted here.
func (m *Module) fromServer(st *module.Stanza) bool {
	return st.Session == nil && st.From.Domainpart() != "" && !m.Hosted(st.From.Domainpart())
}

type depthKey struct{}

// run hands st to the handlers named hooks, in order, until one returns DONE. Scripts work on
// copies of the stanza, because delivery may share a stanza's children among recipients; when
// every handler returned CONT and one changed its copy, the result replaces the stanza in place.
// recv says the stanza has not been routed yet, so a changed 'to' retargets it; in delivery
// hooks the recipient is fixed and 'to' and 'from' are kept as they were.
func (m *Module) run(ctx context.Context, st *module.Stanza, recv bool, hooks ...string) (module.Verdict, error) {
	want := false
	for _, h := range hooks {
		want = want || m.e.hooks[h]
	}
	if !want {
		return module.Continue, nil
	}
	s := m.e.acquire(ctx)
	if s == nil {
		return module.Continue, nil
	}
	cur := st.El
	changed, done := false, false
	var out []*stanza.Element
	func() {
		defer func() {
			// Calls recover from their own panics; this covers the code around them, so that
			// the state always returns to the pool and the stanza always continues.
			if r := recover(); r != nil {
				m.h.Log.Error("scriptlet: hook panicked; the stanza continues", "hooks", strings.Join(hooks, ","), "panic", fmt.Sprint(r))
				s.broken = true
				changed, done = false, false
			}
			out = s.out
			s.out = nil
			m.e.release(s)
		}()
		for _, h := range hooks {
			if !m.e.hooks[h] {
				continue
			}
			var c bool
			cur, c, done = s.dispatchStanza(h, st.Session, cur)
			changed = changed || c
			if done {
				break
			}
		}
	}()
	if !done && changed {
		m.apply(st, cur, recv)
	}
	m.route(ctx, out)
	if done {
		return module.Handled, nil
	}
	return module.Continue, nil
}

// dispatchStanza calls the handler named hook of every registered table in order until one
// returns DONE. Each handler works on its own copy of cur, and its changes are kept only when
// it returns without error, so a handler stopped halfway leaves no half-made rewrite behind.
// It returns the stanza as the handlers left it and whether any of them changed it.
func (s *state) dispatchStanza(hook string, sess router.Session, cur *stanza.Element) (*stanza.Element, bool, bool) {
	changed := false
	for _, m := range s.mods {
		fn := s.L.GetField(m.tbl, hook)
		if fn.Type() != lua.LTFunction {
			continue
		}
		s.cur = callName{script: m.script, module: m.name, hook: hook}
		d := &doc{}
		work := cur.Copy()
		var ret lua.LValue = lua.LNil
		// Each handler gets handles of its own generation, so one that keeps them cannot
		// reach the stanza from a later call.
		s.gen++
		if err := s.call(fn, m.tbl, &ret, s.newSession(sess), s.newNode(d, work)); err != nil {
			s.e.log.Error("scriptlet: handler failed; the stanza continues", "script", m.script, "module", m.name, "hook", hook, "err", firstLine(err.Error()))
			continue
		}
		if ret == luaDONE {
			return cur, changed, true
		}
		if d.dirty {
			cur, changed = work, true
		}
	}
	return cur, changed, false
}

// apply makes the script's rewrite of cp the stanza st carries.
func (m *Module) apply(st *module.Stanza, cp *stanza.Element, recv bool) {
	to, from := st.El.Attr("to"), st.El.Attr("from")
	hadTo := st.El.HasAttr("to")
	*st.El = *cp
	if !recv {
		restore(st.El, "to", to, hadTo)
		restore(st.El, "from", from, from != "")
		return
	}
	restore(st.El, "from", from, from != "")
	if nt := st.El.Attr("to"); nt != to {
		j, err := jid.Parse(nt)
		if err != nil || nt == "" {
			m.h.Log.Warn("scriptlet: rewritten 'to' is not a valid address; keeping the original", "to", nt)
			restore(st.El, "to", to, hadTo)
			return
		}
		st.To = j
	}
}

// restore sets or removes attribute name as it was.
func restore(el *stanza.Element, name, value string, had bool) {
	if had {
		el.SetAttr(name, value)
	} else {
		el.RemoveAttr(name)
	}
}

// route sends the stanzas scripts queued, one level deeper than the stanza that caused them.
func (m *Module) route(ctx context.Context, out []*stanza.Element) {
	if len(out) == 0 {
		return
	}
	depth, _ := ctx.Value(depthKey{}).(int)
	if depth >= maxSendDepth {
		m.h.Log.Warn("scriptlet: stanzas sent by scripts in reply to stanzas sent by scripts, too deep; dropped", "count", len(out))
		return
	}
	ctx = context.WithValue(ctx, depthKey{}, depth+1)
	for _, el := range out {
		if err := m.h.Send(ctx, el); err != nil {
			m.h.Log.Debug("scriptlet: stanza from a script not routable", "to", el.Attr("to"), "err", err)
		}
	}
}

// presence is what xmpp.online reports beyond availability.
type presence struct{ show, status string }

// presenceTracker remembers the show and status of each session's last broadcast presence.
// The presence module keeps the last presence too but offers no way to read it.
type presenceTracker struct {
	mu   sync.Mutex
	last map[router.Session]presence
}

func (p *presenceTracker) update(s router.Session, el *stanza.Element) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch el.Attr("type") {
	case "":
		var pr presence
		if c := el.Child(stanza.NSClient, "show"); c != nil {
			pr.show = c.Text()
		}
		if c := el.Child(stanza.NSClient, "status"); c != nil {
			pr.status = c.Text()
		}
		p.last[s] = pr
	case "unavailable":
		delete(p.last, s)
	}
}

func (p *presenceTracker) forget(s router.Session) {
	p.mu.Lock()
	delete(p.last, s)
	p.mu.Unlock()
}

func (p *presenceTracker) get(s router.Session) (presence, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, ok := p.last[s]
	return pr, ok
}
