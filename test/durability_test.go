package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Load of the durability test: clients working at once, and what each does
// at most. The server is killed once enough has been acknowledged, while
// the clients are still sending, so that the kill lands in the middle of
// writes.
const (
	durClients      = 4
	durMaxSets      = 90 // roster sets per client, every tenth followed by a removal
	durMaxMessages  = 60 // offline messages per client
	durMessageBatch = 5  // messages between two acknowledging pings
	durKillSets     = 200
	durKillMessages = 120
	durLoadTimeout  = 60 * time.Second
)

// durLedger records what the server acknowledged before the kill.
type durLedger struct {
	mu        sync.Mutex
	setAcked  map[string]string // contact → name, per owner key "owner|contact"
	removed   map[string]bool   // "owner|contact" of removals that were attempted
	msgAcked  map[string]bool   // "receiver|body"
	sets, msg int
	enough    chan struct{}
	once      sync.Once
}

func (l *durLedger) ackSet(owner, contact, name string) {
	l.mu.Lock()
	l.setAcked[owner+"|"+contact] = name
	l.sets++
	l.check()
	l.mu.Unlock()
}

func (l *durLedger) ackMessages(receiver string, bodies []string) {
	l.mu.Lock()
	for _, b := range bodies {
		l.msgAcked[receiver+"|"+b] = true
	}
	l.msg += len(bodies)
	l.check()
	l.mu.Unlock()
}

func (l *durLedger) check() {
	if l.sets >= durKillSets && l.msg >= durKillMessages {
		l.once.Do(func() { close(l.enough) })
	}
}

// TestIMDurability checks issue item 7: a roster change or an offline message
// the server has acknowledged survives a kill -9 of the server. Several
// mellium clients set and remove roster items and send messages to offline
// users concurrently; a roster change counts as acknowledged when its iq
// result arrived, an offline message when a ping sent after it was answered
// and no error for it came back. The server is killed with SIGKILL while the
// clients are still busy, restarted on the same data directory (and the same
// PostgreSQL schema), and every acknowledged change must be there.
func TestIMDurability(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		var names []string
		for i := 0; i < durClients; i++ {
			names = append(names, fmt.Sprintf("owner%d", i), fmt.Sprintf("rcpt%d", i))
		}
		srv := startIMServer(t, b, imOptions{Users: users(names...), MaxOffline: -1})
		led := &durLedger{setAcked: map[string]string{}, removed: map[string]bool{}, msgAcked: map[string]bool{},
			enough: make(chan struct{})}

		clients := make([]*imClient, durClients)
		for i := range clients {
			clients[i] = dialIM(t, srv.Server, fmt.Sprintf("owner%d", i), fmt.Sprintf("pw-owner%d", i), "load")
		}
		// A subscription request to an offline user is state the server
		// keeps for her (§3.1.3); owner0 has it acknowledged by the push of
		// its pending-out item before the load starts.
		rosterGet(t, clients[0], nil)
		clients[0].send(`<presence to='rcpt0@localhost' type='subscribe'/>`)
		clients[0].expect("push of the pending request to rcpt0", isPush("rcpt0@localhost"))
		clients[0].sync()
		// The load stops when the server is killed: requests in flight then
		// have no answer to wait for.
		ctx, stopLoad := context.WithTimeout(context.Background(), durLoadTimeout)
		defer stopLoad()
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				durWork(ctx, c, i, led)
			}()
		}
		select {
		case <-led.enough:
		case <-time.After(durLoadTimeout):
			// Reached only when the clients finished or failed before the
			// goal; the check below still holds for what was acknowledged.
		}
		srv.kill9()
		stopLoad()
		waitGroupBounded(t, &wg, 2*imWait, "the load clients to stop after the kill")
		led.mu.Lock()
		t.Logf("killed after %d acknowledged roster changes and %d acknowledged offline messages", led.sets, led.msg)
		if led.sets == 0 || led.msg == 0 {
			t.Fatalf("the load produced %d acknowledged roster changes and %d messages; nothing to check", led.sets, led.msg)
		}
		led.mu.Unlock()

		srv.start()
		for i := 0; i < durClients; i++ {
			owner := fmt.Sprintf("owner%d", i)
			c := dialIM(t, srv.Server, owner, "pw-"+owner, "check")
			items := rosterItems(rosterGet(t, c, nil))
			missing := 0
			for key, name := range led.setAcked {
				o, contact, _ := strings.Cut(key, "|")
				if o != owner+"@localhost" {
					continue
				}
				if led.removed[key] {
					if name == "" && items[contact] != nil {
						t.Errorf("%s: acknowledged removal of %s undone by the restart: %s", owner, contact, items[contact])
					}
					continue
				}
				switch it := items[contact]; {
				case it == nil:
					missing++
					if missing <= 5 {
						t.Errorf("%s: acknowledged roster item %s lost in the kill", owner, contact)
					}
				case it.attr("name") != name || !slices.Equal(itemGroups(it), []string{"Load"}):
					t.Errorf("%s: acknowledged item %s came back as %s, want name %q group Load", owner, contact, it, name)
				}
			}
			if len(items) == 0 {
				t.Errorf("%s: empty roster after the restart", owner)
			}
			if missing > 5 {
				t.Errorf("%s: %d acknowledged roster items lost in all", owner, missing)
			}

			rcpt := fmt.Sprintf("rcpt%d", i)
			r := dialIM(t, srv.Server, rcpt, "pw-"+rcpt, "check")
			r.sendPresence("")
			if i == 0 {
				if it := items["rcpt0@localhost"]; it == nil || it.attr("ask") != "subscribe" {
					t.Errorf("owner0's pending-out item for rcpt0 after the kill: %v, want ask='subscribe'", it)
				}
				r.expect("the subscription request stored before the kill", isPresence("owner0@localhost", "subscribe"))
			}
			got := map[string]bool{}
			for _, m := range r.all(func(e *element) bool { return e.XMLName.Local == "message" }) {
				if b := m.child(nsClient, "body"); b != nil {
					got[b.Text] = true
				}
			}
			lost := 0
			for key := range led.msgAcked {
				rc, body, _ := strings.Cut(key, "|")
				if rc == rcpt+"@localhost" && !got[body] {
					lost++
					if lost <= 5 {
						t.Errorf("%s: acknowledged offline message %q lost in the kill", rcpt, body)
					}
				}
			}
			if lost > 5 {
				t.Errorf("%s: %d acknowledged offline messages lost in all", rcpt, lost)
			}
		}
	})
}

// durWork is one load client: roster sets (with a removal every tenth) and
// batches of messages to its offline recipient. It stops at the first error,
// which the kill causes; it must not fail the test from its goroutine.
func durWork(ctx context.Context, c *imClient, i int, led *durLedger) {
	owner := c.bare()
	rcpt := fmt.Sprintf("rcpt%d@localhost", i)
	var batch []string
	msgs := 0
	for n := 0; n < durMaxSets; n++ {
		contact := fmt.Sprintf("contact%d-%d@localhost", i, n)
		name := fmt.Sprintf("Contact %d/%d", i, n)
		r, err := c.tryIQContext(ctx, fmt.Sprintf(`<iq type='set'><query xmlns='jabber:iq:roster'><item jid='%s' name='%s'><group>Load</group></item></query></iq>`, contact, name))
		if err != nil || r.attr("type") != "result" {
			return
		}
		led.ackSet(owner, contact, name)
		if n%10 == 9 {
			// Remove an item set earlier; once acknowledged it must stay
			// removed. The ledger marks it before sending, since a removal
			// the server applied but did not acknowledge is not an error.
			old := fmt.Sprintf("contact%d-%d@localhost", i, n-5)
			led.mu.Lock()
			led.removed[owner+"|"+old] = true
			led.mu.Unlock()
			r, err := c.tryIQContext(ctx, fmt.Sprintf(`<iq type='set'><query xmlns='jabber:iq:roster'><item jid='%s' subscription='remove'/></query></iq>`, old))
			if err != nil || r.attr("type") != "result" {
				return
			}
			led.ackSet(owner, old, "")
		}
		if msgs < durMaxMessages {
			body := fmt.Sprintf("m%d-%d", i, msgs)
			msgs++
			if err := c.Send(ctx, rawTokens(fmt.Sprintf(`<message to='%s' type='chat' id='%s'><body>%s</body></message>`, rcpt, body, body))); err != nil {
				return
			}
			batch = append(batch, body)
			if len(batch) == durMessageBatch {
				r, err := c.tryIQContext(ctx, `<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
				if err != nil || r.attr("type") != "result" {
					return
				}
				// An error for any message of the batch arrived before the
				// pong; those messages were refused, not acknowledged.
				c.mu.Lock()
				refused := map[string]bool{}
				for e := c.take(func(e *element) bool { return e.XMLName.Local == "message" && e.attr("type") == "error" }); e != nil; e = c.take(func(e *element) bool { return e.XMLName.Local == "message" && e.attr("type") == "error" }) {
					refused[e.attr("id")] = true
				}
				c.mu.Unlock()
				var ok []string
				for _, b := range batch {
					if !refused[b] {
						ok = append(ok, b)
					}
				}
				led.ackMessages(rcpt, ok)
				batch = nil
			}
		}
	}
}

// waitGroupBounded waits for wg at most d.
func waitGroupBounded(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// TestIMImportRosters imports a Momentum roster document with
// `impetus import-rosters` into the server's storage and checks that the
// owner then logs in to exactly that roster (issue item 6).
func TestIMImportRosters(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := newIMServer(t, b, imOptions{Users: users("romeo", "juliet", "nurse", "tybalt")})
		doc := map[string]any{
			"romeo@localhost": map[string]any{
				"juliet@localhost": map[string]any{
					"name": "Juliet", "groups": []string{"Friends", "Capulets"},
					"pending_requests": map[string]any{}, "subscription": "both",
				},
				"nurse@localhost": map[string]any{
					"name": "Nurse", "groups": []string{}, "pending_requests": map[string]any{"out": true},
					"subscription": "none",
				},
				"tybalt@localhost": map[string]any{
					"name": "Tybalt", "groups": []string{"Capulets"}, "pending_requests": map[string]any{},
					"subscription": "from",
				},
			},
			// The contacts' side of the same subscriptions, as Momentum
			// kept one document per user.
			"juliet@localhost": map[string]any{
				"romeo@localhost": map[string]any{"name": "Romeo", "subscription": "both"},
			},
			"tybalt@localhost": map[string]any{
				"romeo@localhost": map[string]any{"subscription": "to"},
			},
		}
		data, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "rosters.json")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out := runImpetus(t, "import-rosters", "--config", srv.config, "--data", srv.dataDir(), file)
		t.Logf("import-rosters: %s", strings.TrimSpace(out))
		srv.start()

		romeo := dialIM(t, srv.Server, "romeo", "pw-romeo", "r")
		items := rosterItems(rosterGet(t, romeo, nil))
		want := map[string]struct {
			name, sub, ask string
			groups         []string
		}{
			"juliet@localhost": {"Juliet", "both", "", []string{"Friends", "Capulets"}},
			"nurse@localhost":  {"Nurse", "none", "subscribe", nil},
			"tybalt@localhost": {"Tybalt", "from", "", []string{"Capulets"}},
		}
		if len(items) != len(want) {
			t.Errorf("imported roster has %d items, want %d", len(items), len(want))
		}
		for j, w := range want {
			it := items[j]
			if it == nil {
				t.Errorf("imported roster lacks %s", j)
				continue
			}
			g := itemGroups(it)
			slices.Sort(g)
			wg := slices.Clone(w.groups)
			slices.Sort(wg)
			if it.attr("name") != w.name || it.attr("subscription") != w.sub || it.attr("ask") != w.ask || !slices.Equal(g, wg) {
				t.Errorf("imported item %s, want name=%q subscription=%q ask=%q groups %v", it, w.name, w.sub, w.ask, w.groups)
			}
		}

		// The imported subscription is live: juliet ('both') sees romeo's
		// presence and romeo hers through his probe; tybalt ('from') gets
		// romeo's presence too.
		juliet := online(t, srv.Server, "juliet", "j", "")
		tybalt := online(t, srv.Server, "tybalt", "t", "")
		romeo.sendPresence("")
		juliet.expect("romeo's presence after the import", isPresence(romeo.full(), ""))
		tybalt.expect("romeo's presence after the import", isPresence(romeo.full(), ""))
		romeo.expect("juliet's presence answering romeo's probe", isPresence(juliet.full(), ""))
	})
}
