package config

import (
	"fmt"
	"strings"
	"testing"
)

// treeString renders a tree compactly so tests can compare shapes.
func treeString(s *Scope) string {
	var parts []string
	for _, o := range s.Options {
		parts = append(parts, o.Name+"="+valueString(o.Value))
	}
	for _, c := range s.Children {
		head := c.Kind
		if c.HasName {
			head += fmt.Sprintf("%q", c.Name)
		}
		parts = append(parts, head+"{"+treeString(c)+"}")
	}
	return strings.Join(parts, " ")
}

func valueString(v Value) string {
	switch v.Kind {
	case ArrayValue:
		var items []string
		for _, it := range v.Items {
			items = append(items, valueString(it))
		}
		return "(" + strings.Join(items, " ") + ")"
	case DictValue:
		var items []string
		for _, e := range v.Entries {
			items = append(items, e.Key+"="+valueString(e.Value))
		}
		return "[" + strings.Join(items, " ") + "]"
	}
	return fmt.Sprintf("%q", v.Str)
}

func TestParseForms(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"empty", "", ""},
		{"comments only", "# one\n/* two\n three */\n", ""},
		{"scalar", "key = value", `key="value"`},
		{"quoted scalar", `key = "a b"`, `key="a b"`},
		{"trailing hash comment", "a = 1 # note\nb = 2", `a="1" b="2"`},
		{"hash ends a bare word", "a = 1# note", `a="1"`},
		{"hash inside quotes", `a = "x # y"`, `a="x # y"`},
		{"c comment between", "a /* x */ = /* y */ 1", `a="1"`},
		{"c comments do not nest", "/* a /* b */ c = 1", `c="1"`},
		{"escapes", `a = "say \"hi\" \\ \d"`, `a="say \"hi\" \\ \\d"`},
		{"multi-line string", "a = \"x\ny\"", `a="x\ny"`},
		{"anonymous scope", "xmpp {}", "xmpp{}"},
		{"quoted named scope", `domain "#xmpp#example.com" { XMPP_Role = server }`, `domain"#xmpp#example.com"{XMPP_Role="server"}`},
		{"bare named scope", "ThreadPool accept-pool { Concurrency = 4 }", `ThreadPool"accept-pool"{Concurrency="4"}`},
		{"bare path name", "Listen /tmp/sock {}", `Listen"/tmp/sock"{}`},
		{"brace on next line", "bounce_logger \"b1\"\n{\n}", `bounce_logger"b1"{}`},
		{"anonymous brace on next line", "xmpp\n{\n}", `xmpp{}`},
		{"empty quoted name", `domain "" {}`, `domain""{}`},
		{"nested scopes", `l { Listen ":25" { Peer "10.0.0.1" { a = b } } }`, `l{Listen":25"{Peer"10.0.0.1"{a="b"}}}`},
		{"dictionary", `p = [ uri = "file:///x" realm = "my realm" ]`, `p=[uri="file:///x" realm="my realm"]`},
		{"dictionary on lines", "p = [\n  k = v\n  k2 = \"v 2\"\n]", `p=[k="v" k2="v 2"]`},
		{"dictionary without equals", `AuthDigestMD5Parameters [ uri = "digest:///x" ]`, `AuthDigestMD5Parameters=[uri="digest:///x"]`},
		{"empty dictionary", "p = []", "p=[]"},
		{"nested dictionary", "p = [ a = [ b = c ] ]", `p=[a=[b="c"]]`},
		{"quoted dictionary key", `p = [ "a b" = c ]`, `p=[a b="c"]`},
		{"array", `a = ( x y "c d" )`, `a=("x" "y" "c d")`},
		{"empty array", `a = ()`, `a=()`},
		{"array without spaces", `ERROR = (TIME FD)`, `ERROR=("TIME" "FD")`},
		{"bare ip", "Gateway = 10.10.10.50", `Gateway="10.10.10.50"`},
		{"bare uri", "uri = digest:///etc/pw", `uri="digest:///etc/pw"`},
		{"bare cidr array", "Relay_Hosts = ( 127.0.0.0/8 10.10.10.0/24 )", `Relay_Hosts=("127.0.0.0/8" "10.10.10.0/24")`},
		{"octal", "logmode = 0644", `logmode="0644"`},
		{"equals before brace", "Esmtp_Listener = { a = 1 }", `Esmtp_Listener{a="1"}`},
		{"several on one line", `a = 1 b = "2" c { }`, `a="1" b="2" c{}`},
		{"crlf", "a = 1\r\nb = 2\r\n", `a="1" b="2"`},
		{"utf-8", `a = "été"`, `a="été"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := (&loader{}).parseTree("t.conf", []byte(tt.src))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := treeString(root); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParsePositions(t *testing.T) {
	src := "# c\nxmpp_listener {\n\tAuthPlainParameters = [\n\t\turi = \"file:///p\"\n\t]\n  Listen \"*:5222\" {}\n}\n"
	root, err := (&loader{}).parseTree("p.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	l := root.Children[0]
	o := l.Options[0]
	e := o.Value.Entries[0]
	ln := l.Children[0]
	tests := []struct {
		name string
		got  Pos
		want string
	}{
		{"scope", l.Pos, "p.conf:2:1"},
		{"option", o.Pos, "p.conf:3:2"},
		{"dictionary", o.Value.Pos, "p.conf:3:24"},
		{"dictionary key", e.Pos, "p.conf:4:3"},
		{"dictionary value", e.Value.Pos, "p.conf:4:9"},
		{"nested scope", ln.Pos, "p.conf:6:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got.String() != tt.want {
				t.Errorf("got %s, want %s", tt.got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"missing equals", "xmpp_listener {\n    listen_backlog 500\n}", `e.conf:2:20: expected "=" or "{" after option name "listen_backlog", found "500"`},
		{"missing brace after quoted name", "domain \"x\"\n}", `e.conf:2:1: expected "{" after scope name "x", found "}"`},
		{"missing value", "a =", `e.conf:1:4: expected a value for "a", found end of file`},
		{"value is a brace", "a = }", `e.conf:1:5: expected a value for "a", found "}"`},
		{"unclosed scope", "xmpp_listener {\n  a = 1\n", `e.conf:3:1: expected "}" to close xmpp_listener opened at e.conf:1:1, found end of file`},
		{"unclosed named scope", "domain \"d\" {", `e.conf:1:13: expected "}" to close domain "d" opened at e.conf:1:1, found end of file`},
		{"stray brace", "a = 1\n}", `e.conf:2:1: unexpected "}" with no scope open`},
		{"unclosed string", "a = \"abc\nb = 1", `e.conf:1:5: expected a closing '"' for the string started here, found end of file`},
		{"unclosed comment", "a = 1 /* x", `e.conf:1:7: expected "*/" to close the comment started here, found end of file`},
		{"unclosed dictionary", "p = [ a = b", `e.conf:1:12: expected "]" to close the dictionary opened at e.conf:1:5, found end of file`},
		{"unclosed array", "p = ( a b", `e.conf:1:10: expected ")" to close the array opened at e.conf:1:5, found end of file`},
		{"dictionary key without equals", "p = [ a b ]", `e.conf:1:9: expected "=" after dictionary key "a", found "b"`},
		{"brace in dictionary", "p = [ { ]", `e.conf:1:7: expected a key or "]" in the dictionary of "p", found "{"`},
		{"scope in array", "p = ( [ ] )", `e.conf:1:7: expected a value or ")" in the array of "p", found "["`},
		{"statement starts with equals", "= 1", `e.conf:1:1: expected an option or scope name, found "="`},
		{"statement starts with string", `"a" = 1`, `e.conf:1:1: expected an option or scope name, found quoted string "a"`},
		{"bad name", "a.b = 1", `e.conf:1:1: expected an option or scope name (letters, digits and "_"), found "a.b"`},
		{"single quote", "a = 'x'", `e.conf:1:5: unexpected "'": quote values with double quotes`},
		{"include without path", "include {", `e.conf:1:9: expected a path after include, found "{"`},
		{"too deep", strings.Repeat("a {", 70), `e.conf:1:193: scopes nested more than 64 deep`},
		{"column counts characters", "a = \"é\" b", `e.conf:1:10: expected "=" or "{" after option name "b", found end of file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("e.conf", []byte(tt.src))
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
}
