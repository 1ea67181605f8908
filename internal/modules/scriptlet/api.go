package scriptlet

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// env is what the Lua API needs from the host: who is connected, and which domains are local.
type env struct {
	domain string
	router router.Router
	hosted func(domain string) bool
	pres   *presenceTracker
}

// Names of the userdata metatables.
const (
	nodeType    = "scriptlet.node"
	jidType     = "scriptlet.jid"
	sessionType = "scriptlet.session"
)

// doc is one stanza tree handed to a call; dirty records that a script changed it.
type doc struct{ dirty bool }

// node is a Lua handle on one element of a doc. It is valid during the call that made it only.
type node struct {
	s   *state
	gen uint64
	doc *doc
	el  *stanza.Element
}

// session is a Lua handle on the local session a stanza came from.
type session struct {
	s    *state
	gen  uint64
	sess router.Session
}

// openSandbox opens the libraries a script may use and installs the XMPP API. Left out on
// purpose: os, io, debug, package, channel and coroutine, and from the base library every way to
// load code (load, loadstring, loadfile, dofile, module, require) and what reaches outside the
// state (collectgarbage, which runs the Go collector, print, which writes to stdout, and the
// environment functions).
func (s *state) openSandbox() error {
	L := s.L
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return err
		}
	}
	g := L.G.Global
	for _, name := range []string{"dofile", "load", "loadfile", "loadstring", "module", "require",
		"collectgarbage", "print", "_printregs", "getfenv", "setfenv", "newproxy", "_GOPHER_LUA_VERSION"} {
		g.RawSetString(name, lua.LNil)
	}
	// string.rep and table.concat build a string of any size in one Go call, out of reach of
	// the per-instruction memory check, so they check the size first.
	if str, ok := g.RawGetString("string").(*lua.LTable); ok {
		str.RawSetString("rep", L.NewFunction(s.strRep))
	}
	if tbl, ok := g.RawGetString("table").(*lua.LTable); ok {
		tbl.RawSetString("concat", L.NewFunction(s.tableConcat))
	}
	g.RawSetString("print", L.NewFunction(s.print))

	nodeMT := L.NewTypeMetatable(nodeType)
	L.SetField(nodeMT, "__index", L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"name":        s.nodeName,
		"namespace":   s.nodeNamespace,
		"attr":        s.nodeAttr,
		"children":    s.nodeChildren,
		"child":       s.nodeChild,
		"contents":    s.nodeContents,
		"addchild":    s.nodeAddChild,
		"removechild": s.nodeRemoveChild,
		"tostring":    s.nodeToString,
	}))
	L.SetField(nodeMT, "__tostring", L.NewFunction(s.nodeToString))
	L.SetField(nodeMT, "__metatable", lua.LString("locked"))

	jidMT := L.NewTypeMetatable(jidType)
	L.SetField(jidMT, "__index", L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"user":     jidUser,
		"domain":   jidDomain,
		"resource": jidResource,
		"bare":     jidBare,
		"get":      jidGet,
	}))
	L.SetField(jidMT, "__tostring", L.NewFunction(jidGet))
	L.SetField(jidMT, "__metatable", lua.LString("locked"))

	sessMT := L.NewTypeMetatable(sessionType)
	L.SetField(sessMT, "__index", L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"jid":       s.sessJID,
		"available": s.sessAvailable,
		"priority":  s.sessPriority,
	}))
	L.SetField(sessMT, "__metatable", lua.LString("locked"))

	xmpp := L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"send":           s.xmppSend,
		"routeStanza":    s.xmppRouteStanza,
		"connected":      s.xmppConnected,
		"online":         s.xmppOnline,
		"jid":            s.xmppJID,
		"valid_domain":   s.xmppValidDomain,
		"registerModule": s.xmppRegisterModule,
	})
	xmpp.RawSetString("DONE", luaDONE)
	xmpp.RawSetString("CONT", luaCONT)
	xml := L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{"newnode": s.xmlNewNode})
	msys := L.NewTable()
	msys.RawSetString("xmpp", xmpp)
	g.RawSetString("msys", msys)
	g.RawSetString("xml", xml)
	provided := map[string]lua.LValue{
		"msys.xmpp": xmpp,
		"xml":       xml,
		"string":    g.RawGetString("string"),
		"table":     g.RawGetString("table"),
		"math":      g.RawGetString("math"),
	}
	g.RawSetString("require", L.NewFunction(func(L *lua.LState) int {
		name := L.CheckString(1)
		if v, ok := provided[name]; ok {
			L.Push(v)
			return 1
		}
		L.RaiseError("module %q is not available to scriptlets (available: msys.xmpp, xml, string, table, math)", name)
		return 0
	}))
	return nil
}

// print logs its arguments at info level with the running script's name.
func (s *state) print(L *lua.LState) int {
	parts := make([]string, L.GetTop())
	for i := range parts {
		parts[i] = L.ToStringMeta(L.Get(i + 1)).String()
	}
	s.e.log.Info("scriptlet: "+strings.Join(parts, "\t"), "script", s.cur.script, "module", s.cur.module, "hook", s.cur.hook)
	return 0
}

func (s *state) strRep(L *lua.LState) int {
	str := L.CheckString(1)
	n := L.CheckInt(2)
	if n <= 0 || str == "" {
		L.Push(lua.LString(""))
		return 1
	}
	if int64(len(str))*int64(n) > s.e.cfg.MaxMemory || int64(n) > s.e.cfg.MaxMemory {
		L.RaiseError("string.rep: result larger than the memory budget (%d bytes)", s.e.cfg.MaxMemory)
	}
	L.Push(lua.LString(strings.Repeat(str, n)))
	return 1
}

func (s *state) tableConcat(L *lua.LState) int {
	tbl := L.CheckTable(1)
	sep := L.OptString(2, "")
	i := L.OptInt(3, 1)
	j := L.OptInt(4, tbl.Len())
	if i > j {
		L.Push(lua.LString(""))
		return 1
	}
	var size int64
	parts := make([]string, 0, min(j-i+1, 1024))
	for k := i; k <= j; k++ {
		v := tbl.RawGetInt(k)
		switch v.Type() {
		case lua.LTString, lua.LTNumber:
		default:
			L.RaiseError("invalid value (at index %d) in table for 'concat'", k)
		}
		str := v.String()
		size += int64(len(str) + len(sep))
		if size > s.e.cfg.MaxMemory {
			L.RaiseError("table.concat: result larger than the memory budget (%d bytes)", s.e.cfg.MaxMemory)
		}
		parts = append(parts, str)
	}
	L.Push(lua.LString(strings.Join(parts, sep)))
	return 1
}

// checkBudget raises the budget's error in a Go function that allocated.
func (s *state) checkBudget(L *lua.LState) {
	if err := s.b.check(); err != nil {
		L.RaiseError("%s", err.Error())
	}
}

// newNode wraps el, part of d, for the running call.
func (s *state) newNode(d *doc, el *stanza.Element) lua.LValue {
	ud := s.L.NewUserData()
	ud.Value = &node{s: s, gen: s.gen, doc: d, el: el}
	s.L.SetMetatable(ud, s.L.GetTypeMetatable(nodeType))
	return ud
}

// checkNode returns the live node at argument n or raises an error.
func (s *state) checkNode(L *lua.LState, n int) *node {
	ud, ok := L.Get(n).(*lua.LUserData)
	var nd *node
	if ok {
		nd, ok = ud.Value.(*node)
	}
	if !ok {
		L.ArgError(n, "xml node expected")
		return nil
	}
	if !s.inCall || nd.s != s || nd.gen != s.gen {
		L.RaiseError("xml node used after the call it was made in returned")
		return nil
	}
	return nd
}

// validName reports whether name is safe to serialize as an element or attribute name: an XML
// name of ASCII letters, digits and . _ - (and : for attributes like xml:lang), not a namespace
// declaration, which the serializer writes itself.
func validName(name string, colon bool) bool {
	if name == "" || len(name) > 256 || name == "xmlns" || strings.HasPrefix(name, "xmlns:") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-'):
		case i > 0 && colon && c == ':':
		default:
			return false
		}
	}
	return true
}

func (s *state) nodeName(L *lua.LState) int {
	L.Push(lua.LString(s.checkNode(L, 1).el.Local))
	return 1
}

func (s *state) nodeNamespace(L *lua.LState) int {
	L.Push(lua.LString(s.checkNode(L, 1).el.Space))
	return 1
}

// nodeAttr is node:attr(name) to read and node:attr(name, value) to write; a nil value
// removes the attribute.
func (s *state) nodeAttr(L *lua.LState) int {
	n := s.checkNode(L, 1)
	name := L.CheckString(2)
	if L.GetTop() < 3 {
		if !n.el.HasAttr(name) {
			L.Push(lua.LNil)
		} else {
			L.Push(lua.LString(n.el.Attr(name)))
		}
		return 1
	}
	if !validName(name, true) {
		L.ArgError(2, "invalid attribute name")
	}
	v := L.Get(3)
	if v == lua.LNil {
		n.el.RemoveAttr(name)
	} else {
		n.el.SetAttr(name, L.CheckString(3))
	}
	n.doc.dirty = true
	L.Push(L.Get(1))
	return 1
}

func (s *state) nodeChildren(L *lua.LState) int {
	n := s.checkNode(L, 1)
	t := L.NewTable()
	for c := range n.el.Elements() {
		t.Append(s.newNode(n.doc, c))
	}
	L.Push(t)
	return 1
}

// nodeChild is node:child(name[, namespace]): the first child element with that name.
func (s *state) nodeChild(L *lua.LState) int {
	n := s.checkNode(L, 1)
	c := n.el.Child(L.OptString(3, ""), L.CheckString(2))
	if c == nil {
		L.Push(lua.LNil)
	} else {
		L.Push(s.newNode(n.doc, c))
	}
	return 1
}

// nodeContents is node:contents() to read the element's text and node:contents(text) to
// replace everything inside the element with text.
func (s *state) nodeContents(L *lua.LState) int {
	n := s.checkNode(L, 1)
	if L.GetTop() < 2 {
		L.Push(lua.LString(n.el.Text()))
		return 1
	}
	n.el.Children = nil
	n.el.AddText(L.CheckString(2))
	n.doc.dirty = true
	L.Push(L.Get(1))
	return 1
}

// nodeAddChild is node:addchild(name[, namespace]); the child is in its parent's namespace
// unless one is given.
func (s *state) nodeAddChild(L *lua.LState) int {
	n := s.checkNode(L, 1)
	name := L.CheckString(2)
	if !validName(name, false) {
		L.ArgError(2, "invalid element name")
	}
	c := stanza.NewElement(L.OptString(3, n.el.Space), name)
	n.el.AddChild(c)
	n.doc.dirty = true
	s.checkBudget(L)
	L.Push(s.newNode(n.doc, c))
	return 1
}

// nodeRemoveChild is node:removechild(child); it returns whether child was a child of node.
func (s *state) nodeRemoveChild(L *lua.LState) int {
	n := s.checkNode(L, 1)
	c := s.checkNode(L, 2)
	for i, ch := range n.el.Children {
		if ch.Elem == c.el {
			// A fresh slice keeps arrays that other copies of the stanza may share untouched.
			kids := make([]stanza.Node, 0, len(n.el.Children)-1)
			kids = append(kids, n.el.Children[:i]...)
			n.el.Children = append(kids, n.el.Children[i+1:]...)
			n.doc.dirty = true
			L.Push(lua.LTrue)
			return 1
		}
	}
	L.Push(lua.LFalse)
	return 1
}

func (s *state) nodeToString(L *lua.LState) int {
	n := s.checkNode(L, 1)
	L.Push(lua.LString(n.el.AppendXML(nil, stanza.NSClient)))
	s.checkBudget(L)
	return 1
}

// xmlNewNode is xml.newnode(name[, namespace]); stanzas default to jabber:client.
func (s *state) xmlNewNode(L *lua.LState) int {
	name := L.CheckString(1)
	if !validName(name, false) {
		L.ArgError(1, "invalid element name")
	}
	if !s.inCall {
		L.RaiseError("xml.newnode called outside a call")
	}
	L.Push(s.newNode(&doc{}, stanza.NewElement(L.OptString(2, stanza.NSClient), name)))
	return 1
}

// newSession wraps a local session for the running call.
func (s *state) newSession(rs router.Session) lua.LValue {
	if rs == nil {
		return lua.LNil
	}
	ud := s.L.NewUserData()
	ud.Value = &session{s: s, gen: s.gen, sess: rs}
	s.L.SetMetatable(ud, s.L.GetTypeMetatable(sessionType))
	return ud
}

func (s *state) checkSession(L *lua.LState) *session {
	ud, ok := L.Get(1).(*lua.LUserData)
	var ss *session
	if ok {
		ss, ok = ud.Value.(*session)
	}
	if !ok {
		L.ArgError(1, "session expected")
		return nil
	}
	if !s.inCall || ss.s != s || ss.gen != s.gen {
		L.RaiseError("session used after the call it was given to returned")
		return nil
	}
	return ss
}

func (s *state) sessJID(L *lua.LState) int {
	L.Push(newJID(L, s.checkSession(L).sess.JID()))
	return 1
}

func (s *state) sessAvailable(L *lua.LState) int {
	L.Push(lua.LBool(s.checkSession(L).sess.Available()))
	return 1
}

func (s *state) sessPriority(L *lua.LState) int {
	L.Push(lua.LNumber(s.checkSession(L).sess.Priority()))
	return 1
}

func newJID(L *lua.LState, j jid.JID) lua.LValue {
	ud := L.NewUserData()
	ud.Value = j
	L.SetMetatable(ud, L.GetTypeMetatable(jidType))
	return ud
}

func checkJID(L *lua.LState) jid.JID {
	if ud, ok := L.Get(1).(*lua.LUserData); ok {
		if j, ok := ud.Value.(jid.JID); ok {
			return j
		}
	}
	L.ArgError(1, "jid expected")
	return jid.JID{}
}

func jidUser(L *lua.LState) int {
	L.Push(lua.LString(checkJID(L).Localpart()))
	return 1
}

func jidDomain(L *lua.LState) int {
	L.Push(lua.LString(checkJID(L).Domainpart()))
	return 1
}

func jidResource(L *lua.LState) int {
	L.Push(lua.LString(checkJID(L).Resourcepart()))
	return 1
}

func jidBare(L *lua.LState) int {
	L.Push(lua.LString(checkJID(L).Bare().String()))
	return 1
}

func jidGet(L *lua.LState) int {
	L.Push(lua.LString(checkJID(L).String()))
	return 1
}

// jidArg reads a JID given as a string or a jid object at argument n.
func jidArg(L *lua.LState, n int) (jid.JID, bool) {
	switch v := L.Get(n).(type) {
	case lua.LString:
		j, err := jid.Parse(string(v))
		return j, err == nil
	case *lua.LUserData:
		j, ok := v.Value.(jid.JID)
		return j, ok
	}
	L.ArgError(n, "jid string expected")
	return jid.JID{}, false
}

// methodArgs skips the table a function was called on with a colon (xmpp:send(…)), so both
// xmpp.send(s) and xmpp:send(s) work.
func methodArgs(L *lua.LState) int {
	if _, ok := L.Get(1).(*lua.LTable); ok {
		return 2
	}
	return 1
}

// xmppJID is xmpp.jid(s): a jid object, or nil and a message when s is not a valid JID.
func (s *state) xmppJID(L *lua.LState) int {
	j, err := jid.Parse(L.CheckString(methodArgs(L)))
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString(err.Error()))
		return 2
	}
	L.Push(newJID(L, j))
	return 1
}

// xmppConnected is xmpp.connected(jid): whether the account (bare JID) or the resource (full
// JID) has a session on this server.
func (s *state) xmppConnected(L *lua.LState) int {
	j, ok := jidArg(L, methodArgs(L))
	if !ok {
		L.Push(lua.LFalse)
		return 1
	}
	if j.Resourcepart() != "" {
		L.Push(lua.LBool(s.e.env.router.Session(j) != nil))
	} else {
		L.Push(lua.LBool(len(s.e.env.router.Sessions(j)) > 0))
	}
	return 1
}

// xmppOnline is xmpp.online(jid): a table with availability (boolean) and the show and status
// of the session's last broadcast presence (nil when the presence had none). For a bare JID the
// available session with the highest priority speaks for the account.
func (s *state) xmppOnline(L *lua.LState) int {
	j, ok := jidArg(L, methodArgs(L))
	t := L.NewTable()
	t.RawSetString("availability", lua.LFalse)
	if !ok {
		L.Push(t)
		return 1
	}
	var best router.Session
	if j.Resourcepart() != "" {
		if rs := s.e.env.router.Session(j); rs != nil && rs.Available() {
			best = rs
		}
	} else {
		for _, rs := range s.e.env.router.Sessions(j) {
			if rs.Available() && (best == nil || rs.Priority() > best.Priority()) {
				best = rs
			}
		}
	}
	if best != nil {
		t.RawSetString("availability", lua.LTrue)
		if p, ok := s.e.env.pres.get(best); ok {
			if p.show != "" {
				t.RawSetString("show", lua.LString(p.show))
			}
			if p.status != "" {
				t.RawSetString("status", lua.LString(p.status))
			}
		}
	}
	L.Push(t)
	return 1
}

// xmppValidDomain is xmpp.valid_domain(d): whether d is an XMPP domain hosted here.
func (s *state) xmppValidDomain(L *lua.LState) int {
	L.Push(lua.LBool(s.e.env.hosted(L.CheckString(methodArgs(L)))))
	return 1
}

// xmppRegisterModule is xmpp.registerModule(name, table): table's handler methods run for
// stanzas from then on, after those of tables registered before it.
func (s *state) xmppRegisterModule(L *lua.LState) int {
	i := methodArgs(L)
	name := L.CheckString(i)
	tbl := L.CheckTable(i + 1)
	if s.loading == "" {
		L.RaiseError("xmpp.registerModule must be called when the script loads")
	}
	s.mods = append(s.mods, handlerTable{script: s.loading, name: name, tbl: tbl})
	return 0
}

// xmppSend is xmpp:send(stanza_string): it parses the stanza and queues it for routing,
// returning whether it was parsed and accepted.
func (s *state) xmppSend(L *lua.LState) int {
	str := L.CheckString(methodArgs(L))
	el, err := parseStanza(str)
	s.checkBudget(L)
	if err != nil {
		s.e.log.Warn("scriptlet: xmpp:send: stanza not parsed", "script", s.cur.script, "hook", s.cur.hook, "err", err)
		L.Push(lua.LFalse)
		return 1
	}
	L.Push(lua.LBool(s.queue(el)))
	return 1
}

// xmppRouteStanza is xmpp.routeStanza(node): it queues a copy of the node for routing.
func (s *state) xmppRouteStanza(L *lua.LState) int {
	n := s.checkNode(L, methodArgs(L))
	L.Push(lua.LBool(s.queue(n.el.Copy())))
	s.checkBudget(L)
	return 1
}

// queue accepts a stanza a script sends: a message, presence or iq in jabber:client with a
// valid 'to'; a missing 'from' becomes the hosted domain.
func (s *state) queue(el *stanza.Element) bool {
	bad := ""
	switch {
	case el.Space != stanza.NSClient || (el.Local != "message" && el.Local != "presence" && el.Local != "iq"):
		bad = "not a message, presence or iq"
	case len(s.out) >= maxSendsPerCall:
		bad = "too many stanzas sent in one call"
	default:
		if _, err := jid.Parse(el.Attr("to")); err != nil || el.Attr("to") == "" {
			bad = "no valid 'to'"
		} else if f := el.Attr("from"); f != "" {
			if _, err := jid.Parse(f); err != nil {
				bad = "invalid 'from'"
			}
		}
	}
	if bad != "" {
		s.e.log.Warn("scriptlet: stanza not sent: "+bad, "script", s.cur.script, "hook", s.cur.hook)
		return false
	}
	if el.Attr("from") == "" {
		el.SetAttr("from", s.e.env.domain)
	}
	s.out = append(s.out, el)
	return true
}

// streamHead gives a stanza string the namespace context of a client stream.
const streamHead = `<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">`

// parseStanza parses one stanza written as in a client stream, with the stream decoder's
// limits on size and depth.
func parseStanza(s string) (*stanza.Element, error) {
	d := xmlstream.NewDecoder(strings.NewReader(streamHead+s), xmlstream.Limits{})
	if _, err := d.ReadHeader(); err != nil {
		return nil, err
	}
	return d.ReadElement()
}
