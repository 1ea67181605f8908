package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes the parser panic, and that any input
// it accepts dumps to text that parses again to the same dump. Includes are
// disabled so that generated paths cannot make the test read the disk.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/config/*.conf")
	for _, name := range files {
		if src, err := os.ReadFile(name); err == nil {
			f.Add(src)
		}
	}
	for _, s := range []string{minimal, resolution, "a = [ k = ( x ) ]", `a = "\"\\"`, "/* x */ # y\n", "x {", "Listen /tmp/s {}", "domain \"#xmpp#a\" { xmpp_role = server }"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		c, _, err := parse("f.conf", src, nil)
		if err != nil {
			return
		}
		out := c.Dump()
		c2, _, err := parse("f.conf", []byte(out), nil)
		if err != nil {
			t.Fatalf("dump does not parse: %v\ninput: %q\ndump:\n%s", err, src, out)
		}
		if out2 := c2.Dump(); out2 != out {
			t.Fatalf("dump is not stable\ninput: %q\nfirst:\n%s\nsecond:\n%s", src, out, out2)
		}
		if !sameConfig(c, c2) {
			t.Fatalf("dump parses to a different configuration\ninput: %q\ndump:\n%s", src, out)
		}
	})
}
