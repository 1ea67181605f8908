package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A malformed-input case is one file under testdata/malformed: comment lines starting with "#"
// give its description, "phase:" and "want:", and the rest of the file is sent as is, after
// expanding {{repeat N TEXT}} (TEXT N times, with {{n}} in TEXT replaced by the repetition's
// index), so that huge inputs stay small files.
//
// Phases say how far the connection gets before the input is sent:
//
//	raw          nothing: the input is the first thing on the connection
//	open         after the client's stream header and the server's features
//	authed       after STARTTLS and SASL, before binding a resource
//	authed-bind  as authed; the input is a bind request
//	bound        after binding a resource
//
// Wants are "stream-error COND[|COND…]" (the stream is closed with that error),
// "stanza-error COND" (the stanza is answered with that error and the stream carries on), or
// "survives" (no error: the session keeps working).
type malformedCase struct {
	name, desc, phase, want string
	payload                 []byte
}

func loadMalformed(t *testing.T) []malformedCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "malformed", "*.xml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no malformed-input corpus under testdata/malformed: %v", err)
	}
	var cases []malformedCase
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := malformedCase{name: strings.TrimSuffix(filepath.Base(f), ".xml")}
		for bytes.HasPrefix(data, []byte("#")) {
			line, rest, _ := bytes.Cut(data, []byte("\n"))
			data = rest
			text := strings.TrimSpace(string(line[1:]))
			switch {
			case strings.HasPrefix(text, "phase:"):
				c.phase = strings.TrimSpace(strings.TrimPrefix(text, "phase:"))
			case strings.HasPrefix(text, "want:"):
				c.want = strings.TrimSpace(strings.TrimPrefix(text, "want:"))
			default:
				c.desc += text
			}
		}
		if c.phase == "" || c.want == "" {
			t.Fatalf("%s: missing phase or want", f)
		}
		if c.payload, err = expandRepeats(data); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cases = append(cases, c)
	}
	return cases
}

// expandRepeats expands {{repeat N TEXT}}; TEXT may hold {{n}} and nested repeats.
func expandRepeats(in []byte) ([]byte, error) {
	const open = "{{repeat "
	var out []byte
	for {
		i := bytes.Index(in, []byte(open))
		if i < 0 {
			return append(out, in...), nil
		}
		out = append(out, in[:i]...)
		rest := in[i+len(open):]
		sp := bytes.IndexByte(rest, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("malformed repeat")
		}
		n, err := strconv.Atoi(string(rest[:sp]))
		if err != nil || n < 0 || n > 1<<20 {
			return nil, fmt.Errorf("bad repeat count %q", rest[:sp])
		}
		body := rest[sp+1:]
		depth, end := 0, -1
		for j := 0; j+1 < len(body); j++ {
			switch {
			case body[j] == '{' && body[j+1] == '{':
				depth++
				j++
			case body[j] == '}' && body[j+1] == '}':
				if depth == 0 {
					end = j
				} else {
					depth--
					j++
				}
			}
			if end >= 0 {
				break
			}
		}
		if end < 0 {
			return nil, fmt.Errorf("unterminated repeat")
		}
		text, err := expandRepeats(body[:end])
		if err != nil {
			return nil, err
		}
		for k := 0; k < n; k++ {
			out = append(out, bytes.ReplaceAll(text, []byte("{{n}}"), []byte(strconv.Itoa(k)))...)
		}
		in = body[end+2:]
	}
}

// sendRaw writes b and ignores a failure: the server may close the stream before it has read
// everything, which is the point of several cases.
func (c *rawConn) sendRaw(b []byte) {
	fmt.Fprintf(c.trans, "C: %s\n", clip(string(b)))
	_ = c.conn.SetWriteDeadline(time.Now().Add(3 * rawTimeout))
	_, _ = c.conn.Write(b)
}

// ping checks that the session answers an XEP-0199 ping to the server, skipping whatever
// else arrives first.
func (c *rawConn) ping(id string) {
	c.t.Helper()
	c.send(fmt.Sprintf(`<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`, id, testDomain))
	for i := 0; i < 2000; i++ {
		e := c.mustElement("the ping result " + id)
		if e.is(nsClient, "iq") && e.attr("id") == id {
			if e.attr("type") != "result" {
				c.t.Fatalf("ping answered with %s", e)
			}
			return
		}
	}
	c.t.Fatalf("no ping result %s among 2000 elements", id)
}

// expectStanzaError reads until a stanza of type error and checks its condition.
func (c *rawConn) expectStanzaError(cond string) {
	c.t.Helper()
	for i := 0; i < 100; i++ {
		e := c.mustElement("a stanza error <" + cond + "/>")
		if e.attr("type") != "error" {
			continue
		}
		got := ""
		if ee := e.child(nsClient, "error"); ee != nil {
			for _, ch := range ee.Children {
				if ch.XMLName.Space == nsStanzas && ch.XMLName.Local != "text" {
					got = ch.XMLName.Local
				}
			}
		}
		if !slices.Contains(strings.Split(cond, "|"), got) {
			c.t.Fatalf("stanza error %s, want <%s/>", e, cond)
		}
		return
	}
	c.t.Fatalf("no stanza error among 100 elements")
}

// TestMalformedInput sends every case of testdata/malformed to the real server and checks the
// RFC's answer, then that a session connected throughout (the bystander) still works and that
// a fresh client still logs in: a bad client ends its own stream, never the server's service.
func TestMalformedInput(t *testing.T) {
	t.Parallel()
	cases := loadMalformed(t)
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw", "bob": "pw"}, NoIPv6: true})
	bystander := dialRaw(t, srv)
	bystander.login(srv, "bob", "pw", "bystander")

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("%s (phase %s, want %s, %d bytes)", tc.desc, tc.phase, tc.want, len(tc.payload))
			c := dialRaw(t, srv)
			switch tc.phase {
			case "raw":
			case "open":
				c.open()
			case "authed", "authed-bind":
				c.open()
				c.startTLS(srv)
				c.authPlain("alice", "pw")
			case "bound":
				c.login(srv, "alice", "pw", "case-"+strconv.Itoa(i))
			default:
				t.Fatalf("unknown phase %q", tc.phase)
			}
			c.sendRaw(tc.payload)
			kind, cond, _ := strings.Cut(tc.want, " ")
			switch kind {
			case "stream-error":
				if tc.phase == "raw" {
					if _, err := c.readHeader(); err != nil {
						t.Fatalf("no stream header before the error: %v", err)
					}
				}
				c.expectStreamError(cond)
			case "stanza-error":
				c.expectStanzaError(cond)
				if tc.phase == "authed-bind" {
					c.bind("after-error")
				} else {
					c.ping("after-" + tc.name)
				}
			case "survives":
				c.ping("after-" + tc.name)
			default:
				t.Fatalf("unknown want %q", tc.want)
			}

			bystander.ping("bystander-" + tc.name)
			fresh := dialRaw(t, srv)
			fresh.login(srv, "alice", "pw", "fresh")
			fresh.ping("fresh-" + tc.name)
		})
	}
}
