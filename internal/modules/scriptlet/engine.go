package scriptlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"

	"impetus/internal/stanza"
)

// The handler methods a registered table may define, in Momentum's naming style. Only
// client_message_recv is Momentum's; the others are Impetus additions.
const (
	ClientMessageRecv  = "client_message_recv"
	ClientPresenceRecv = "client_presence_recv"
	ClientIQRecv       = "client_iq_recv"
	ServerMessageRecv  = "server_message_recv"
	ServerPresenceRecv = "server_presence_recv"
	MessageDeliver     = "message_deliver"
	PresenceDeliver    = "presence_deliver"
)

var hookNames = []string{ClientMessageRecv, ClientPresenceRecv, ClientIQRecv, ServerMessageRecv, ServerPresenceRecv, MessageDeliver, PresenceDeliver}

// The values handlers return, exported to Lua as msys.xmpp.DONE and msys.xmpp.CONT.
const (
	luaCONT = lua.LNumber(0)
	luaDONE = lua.LNumber(1)
)

// maxScriptSize bounds a script file; scripts are policy, not data.
const maxScriptSize = 1 << 20

// maxSendsPerCall bounds the stanzas one handler call may send, so a script cannot turn one
// stanza into a flood.
const maxSendsPerCall = 100

// compiled is a script compiled once and shared by every state: gopher-lua function
// prototypes are read-only once compiled.
type compiled struct {
	script Script
	proto  *lua.FunctionProto
}

// engine runs one script set: a fixed pool of Lua states, each loaded with every script.
// A Lua state is not safe for concurrent use, so a call takes a state from the pool and gives
// it back; at most len(pool) calls run at once and the others wait for a state, never longer
// than one call's time budget per state.
type engine struct {
	cfg     *Config
	env     *env
	log     *slog.Logger
	scripts []compiled
	pool    chan *state
	// hooks holds the handler names some registered table defines; hook points whose names
	// are all absent are not registered at all.
	hooks map[string]bool
}

// handlerTable is a table a script registered with xmpp.registerModule.
type handlerTable struct {
	script string // the script scope that registered it
	name   string
	tbl    *lua.LTable
}

// state is one Lua state with the registered handler tables of every script.
type state struct {
	e    *engine
	L    *lua.LState
	mods []handlerTable
	b    budget
	// broken is set when a call ran out of budget: the state may have stopped halfway through
	// updating its globals and is replaced before reuse.
	broken bool
	// gen numbers the calls made on this state; nodes and sessions handed to a call remember
	// it, so that a script keeping them in a global cannot touch a stanza after its call.
	gen    uint64
	inCall bool
	// loading is the script whose top-level code runs, for xmpp.registerModule.
	loading string
	// cur names the running handler for the log lines of print.
	cur callName
	// out collects the stanzas the running call sends; they are routed once the state is back
	// in the pool, so a stanza a script sends can run the scripts again without waiting for
	// the state that sent it.
	out []*stanza.Element
}

type callName struct{ script, module, hook string }

func newEngine(cfg *Config, env *env, log *slog.Logger) (*engine, error) {
	e := &engine{cfg: cfg, env: env, log: log, hooks: map[string]bool{}}
	for _, s := range cfg.Scripts {
		if s.Builtin != "" {
			continue
		}
		p, err := compileFile(s.Path)
		if err != nil {
			return nil, fmt.Errorf("scriptlet: script %q: %w", s.Name, err)
		}
		e.scripts = append(e.scripts, compiled{s, p})
	}
	n := cfg.PoolSize
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	e.pool = make(chan *state, n)
	for i := 0; i < n; i++ {
		s, err := e.newState()
		if err != nil {
			e.close()
			return nil, err
		}
		if i == 0 {
			for _, m := range s.mods {
				for _, h := range hookNames {
					if m.tbl.RawGetString(h).Type() == lua.LTFunction || s.L.GetField(m.tbl, h).Type() == lua.LTFunction {
						e.hooks[h] = true
					}
				}
			}
		}
		e.pool <- s
	}
	return e, nil
}

func compileFile(path string) (*lua.FunctionProto, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > maxScriptSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxScriptSize)
	}
	chunk, err := parse.Parse(strings.NewReader(string(data)), path)
	if err != nil {
		return nil, err
	}
	return lua.Compile(chunk, path)
}

// close closes every state in the pool.
func (e *engine) close() {
	for {
		select {
		case s := <-e.pool:
			s.L.Close()
		default:
			return
		}
	}
}

// acquire takes a state from the pool, or returns nil when ctx ends first.
func (e *engine) acquire(ctx context.Context) *state {
	select {
	case s := <-e.pool:
		return s
	default:
	}
	select {
	case s := <-e.pool:
		return s
	case <-ctx.Done():
		return nil
	}
}

// release gives s back to the pool. A state whose call ran out of budget may have been stopped
// halfway through updating its globals, so a fresh one replaces it.
func (e *engine) release(s *state) {
	if s.broken {
		if fresh, err := e.newState(); err == nil {
			s.L.Close()
			s = fresh
		} else {
			e.log.Error("scriptlet: replacing a Lua state failed; keeping the old one", "err", err)
			s.broken = false
		}
	}
	e.pool <- s
}

// newState builds a sandboxed state and runs every script's top-level code in it.
func (e *engine) newState() (*state, error) {
	cfg := e.cfg
	L := lua.NewState(lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       max(cfg.MaxCallDepth, 16),
		RegistrySize:        min(4096, max(cfg.MaxStack, 1024)),
		RegistryMaxSize:     max(cfg.MaxStack, 1024),
		RegistryGrowStep:    512,
		MinimizeStackMemory: true,
	})
	s := &state{e: e, L: L}
	if err := s.openSandbox(); err != nil {
		L.Close()
		return nil, err
	}
	for _, c := range e.scripts {
		s.loading = c.script.Name
		s.cur = callName{script: c.script.Name, hook: "load"}
		fn := L.NewFunctionFromProto(c.proto)
		s.gen++
		if err := s.call(fn, lua.LNil, nil); err != nil {
			L.Close()
			return nil, fmt.Errorf("scriptlet: script %q (%s): %w", c.script.Name, c.script.Path, err)
		}
	}
	s.loading = ""
	s.out = nil
	return s, nil
}

// call runs fn with args under a fresh budget and returns its first result in *ret when ret
// is not nil. Stacks are reset afterwards whatever happens. Callers advance s.gen before making
// the handles they pass, so handles from earlier calls are stale.
func (s *state) call(fn lua.LValue, self lua.LValue, ret *lua.LValue, args ...lua.LValue) (err error) {
	L := s.L
	top := L.GetTop()
	s.inCall = true
	s.b.start(s.e.cfg.MaxInstructions, time.Duration(s.e.cfg.MaxCallMillis)*time.Millisecond, s.e.cfg.MaxMemory)
	L.SetContext(&s.b)
	defer func() {
		// PCall turns panics in the VM and in Go functions into errors; this is the last line
		// for anything that escapes it, so that no script input can take the server down.
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			if s.b.err == nil {
				s.b.err = errors.New("state abandoned after a panic")
			}
		}
		if s.b.err != nil {
			s.broken = true
		}
		L.RemoveContext()
		s.inCall = false
		L.SetTop(top)
	}()
	callArgs := args
	if self != lua.LNil {
		callArgs = append([]lua.LValue{self}, args...)
	}
	err = L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, callArgs...)
	if err == nil && ret != nil {
		*ret = L.Get(-1)
	}
	if err != nil && s.b.err != nil {
		// Say which bound stopped the script rather than the VM's generic message.
		err = fmt.Errorf("%w (%v)", s.b.err, shortError(err))
	}
	return err
}

// shortError keeps the first line of a Lua error, whose traceback adds nothing to a log line.
func shortError(err error) string {
	var ae *lua.ApiError
	msg := err.Error()
	if errors.As(err, &ae) && ae.Object != nil {
		msg = ae.Object.String()
	}
	return firstLine(msg)
}

func firstLine(msg string) string {
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		return msg[:i]
	}
	return msg
}
