package auth

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultDigestRealm is the realm ec_md5passwd uses when $EC_DIGEST_REALM is
// not set.
const DefaultDigestRealm = "Momentum Console"

const passwdUsage = `usage: impetus passwd add|set|delete|list [options] FILE-or-URI [USER]

  add     add USER; it must not exist yet
  set     change the password of USER; it must exist
  delete  remove USER
  list    print the users (never the passwords)

FILE-or-URI is a path or file:///path for a clear-text "user:password" file,
or digest:///path for an htdigest "user:realm:md5hex" file. USER is a
localpart valid for every hosted domain, or localpart@domain for one domain.

options:
  --digest            treat a plain path as an htdigest file
  --realm R           htdigest realm (default $EC_DIGEST_REALM, else "Momentum Console");
                      for list, show only this realm
  --password P        the password (default: the first line read from stdin)
  --stored-cleartext  write the clear-text password in the htdigest third field
                      (for stored_cleartext = "true")
  --scram             in a file:// file, store SCRAM-SHA-1 and SCRAM-SHA-256 keys
                      instead of the clear-text password (DIGEST-MD5 then cannot be used)
  --iterations N      SCRAM iteration count for --scram (default 4096, at least 4096)
`

// errUsage marks command-line mistakes in RunPasswd.
var errUsage = errors.New("usage")

type passwdArgs struct {
	cmd       string
	target    string
	user      string
	realm     string
	realmSet  bool
	password  string
	pwSet     bool
	digest    bool
	cleartext bool
	scram     bool
	iter      int
}

func parsePasswdArgs(args []string) (*passwdArgs, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: missing subcommand", errUsage)
	}
	a := &passwdArgs{cmd: args[0]}
	switch a.cmd {
	case "add", "set", "delete", "list":
	case "-h", "--help", "help":
		return nil, errUsage
	default:
		return nil, fmt.Errorf("%w: unknown subcommand %q", errUsage, a.cmd)
	}
	var pos []string
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		arg := rest[i]
		if arg == "--" {
			pos = append(pos, rest[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			pos = append(pos, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		needValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(rest) {
				return "", fmt.Errorf("%w: option --%s needs a value", errUsage, name)
			}
			i++
			return rest[i], nil
		}
		var err error
		switch name {
		case "realm":
			a.realm, err = needValue()
			a.realmSet = true
		case "password":
			a.password, err = needValue()
			a.pwSet = true
		case "digest":
			a.digest = true
		case "stored-cleartext":
			a.cleartext = true
		case "scram":
			a.scram = true
		case "iterations":
			var v string
			if v, err = needValue(); err == nil {
				if a.iter, err = strconv.Atoi(v); err != nil || a.iter < 4096 {
					err = fmt.Errorf("%w: --iterations needs a whole number of at least 4096", errUsage)
				}
			}
		case "h", "help":
			return nil, errUsage
		default:
			return nil, fmt.Errorf("%w: unknown option %q", errUsage, arg)
		}
		if err != nil {
			return nil, err
		}
	}
	want := 2
	if a.cmd == "list" {
		want = 1
	}
	if len(pos) != want {
		return nil, fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, a.cmd, want, len(pos))
	}
	a.target = pos[0]
	if want == 2 {
		a.user = pos[1]
	}
	if a.cmd != "add" && a.cmd != "set" && a.pwSet {
		return nil, fmt.Errorf("%w: --password is only for add and set", errUsage)
	}
	return a, nil
}

// RunPasswd implements `impetus passwd`: it adds, changes, deletes and lists
// users in Momentum password files (file:// and digest:// formats) and
// returns the process exit status (0 success, 1 failure, 2 usage error).
func RunPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a, err := parsePasswdArgs(args)
	if err != nil {
		if msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": "); err != errUsage {
			fmt.Fprintf(stderr, "impetus passwd: %s\n", msg)
		}
		fmt.Fprint(stderr, passwdUsage)
		return 2
	}
	if err := runPasswd(a, stdin, stdout); err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "impetus passwd: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
			fmt.Fprint(stderr, passwdUsage)
			return 2
		}
		fmt.Fprintf(stderr, "impetus passwd: %v\n", err)
		return 1
	}
	return 0
}

func runPasswd(a *passwdArgs, stdin io.Reader, stdout io.Writer) error {
	path, format := a.target, formatPlain
	if a.digest {
		format = formatDigest
	}
	if strings.Contains(a.target, "://") {
		u, err := url.Parse(a.target)
		if err != nil {
			return fmt.Errorf("%w: invalid uri %q", errUsage, a.target)
		}
		switch strings.ToLower(u.Scheme) {
		case "file":
			if a.digest {
				return fmt.Errorf("%w: --digest contradicts a file:// uri", errUsage)
			}
		case "digest":
			format = formatDigest
		default:
			return fmt.Errorf("%w: passwd manages file:// and digest:// files, not %s://", errUsage, u.Scheme)
		}
		path = u.Path
		if u.Host != "" && u.Host != "localhost" {
			path = u.Host + path
		}
		if path == "" {
			return fmt.Errorf("%w: uri %q has no path", errUsage, a.target)
		}
	}
	if format == formatPlain && (a.realmSet || a.cleartext) {
		return fmt.Errorf("%w: --realm and --stored-cleartext apply to digest files only", errUsage)
	}
	if format == formatDigest && a.scram {
		return fmt.Errorf("%w: --scram applies to file:// files only", errUsage)
	}
	if a.iter != 0 && !a.scram {
		return fmt.Errorf("%w: --iterations goes with --scram", errUsage)
	}
	realm := a.realm
	if !a.realmSet {
		realm = os.Getenv("EC_DIGEST_REALM")
		if realm == "" {
			realm = DefaultDigestRealm
		}
	}
	if strings.ContainsAny(realm, ":\r\n") {
		return fmt.Errorf("%w: realm must not contain ':' or line breaks", errUsage)
	}

	f, err := readPasswdFile(path, a.cmd == "add" || a.cmd == "set")
	if err != nil {
		return err
	}
	if a.cmd == "list" {
		for _, l := range f.lines {
			user, lrealm, ok := splitLine(l, format)
			if !ok || (format == formatDigest && a.realmSet && lrealm != realm) {
				continue
			}
			if format == formatDigest {
				fmt.Fprintf(stdout, "%s:%s\n", user, lrealm)
			} else {
				fmt.Fprintln(stdout, user)
			}
		}
		return nil
	}

	local, domain, err := ParseUser(a.user)
	if err != nil {
		return fmt.Errorf("user %q: %w", a.user, err)
	}
	if strings.ContainsAny(local, ":#") {
		return fmt.Errorf("user %q: ':' and '#' cannot be stored in a password file", a.user)
	}
	userField := local
	if domain != "" {
		userField = local + "@" + domain
	}
	var matches []int
	for i, l := range f.lines {
		user, lrealm, ok := splitLine(l, format)
		if !ok {
			continue
		}
		ll, ld, err := ParseUser(user)
		if err != nil || ll != local || ld != domain {
			continue
		}
		if format == formatDigest && lrealm != realm {
			continue
		}
		matches = append(matches, i)
	}
	describe := userField
	if format == formatDigest {
		describe = fmt.Sprintf("%s in realm %q", userField, realm)
	}
	switch a.cmd {
	case "add":
		if len(matches) > 0 {
			return fmt.Errorf("user %s already exists (use set to change the password)", describe)
		}
	case "set", "delete":
		if len(matches) == 0 {
			return fmt.Errorf("user %s does not exist", describe)
		}
	}

	var newLine string
	if a.cmd != "delete" {
		pw := a.password
		if !a.pwSet {
			if pw, err = readPasswordLine(stdin); err != nil {
				return err
			}
		}
		pw, err = PreparePassword(pw)
		if err != nil {
			return err
		}
		switch {
		case format == formatPlain && a.scram:
			keys, err := FormatSCRAM(pw, max(a.iter, 4096), DefaultSCRAMHashes...)
			if err != nil {
				return err
			}
			newLine = userField + ":" + keys
		case format == formatPlain && isSCRAMField(pw):
			return fmt.Errorf("a clear-text password cannot begin with %q in a file:// file", scramPrefix)
		case format == formatPlain:
			newLine = userField + ":" + pw
		case a.cleartext:
			newLine = userField + ":" + realm + ":" + pw
		default:
			sum := DigestHA1(local, realm, pw)
			newLine = userField + ":" + realm + ":" + hex.EncodeToString(sum[:])
		}
		newLine += f.eol
	}

	var out []string
	switch a.cmd {
	case "add":
		out = f.lines
		if n := len(out); n > 0 && !strings.HasSuffix(out[n-1], "\n") {
			out[n-1] += f.eol
		}
		out = append(out, newLine)
	default:
		drop := map[int]bool{}
		for _, i := range matches {
			drop[i] = true
		}
		for i, l := range f.lines {
			switch {
			case a.cmd == "set" && i == matches[0]:
				out = append(out, newLine)
			case drop[i]:
			default:
				out = append(out, l)
			}
		}
	}
	return writeFileAtomic(path, []byte(strings.Join(out, "")), f.mode)
}

// passwdFile keeps every line of a password file byte for byte, so that
// rewriting it leaves comments and other users untouched.
type passwdFile struct {
	lines []string // each with its line ending, the last one possibly without
	eol   string
	mode  fs.FileMode
}

func readPasswdFile(path string, create bool) (*passwdFile, error) {
	f := &passwdFile{eol: "\n", mode: 0o600}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && create {
			return f, nil
		}
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		f.mode = fi.Mode().Perm()
	}
	s := string(data)
	for s != "" {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			f.lines = append(f.lines, s)
			break
		}
		f.lines = append(f.lines, s[:i+1])
		s = s[i+1:]
	}
	if len(f.lines) > 0 && strings.HasSuffix(f.lines[0], "\r\n") {
		f.eol = "\r\n"
	}
	return f, nil
}

// splitLine returns the user and realm fields of a password line, or false
// for comments, blank lines and lines that are not valid entries.
func splitLine(line string, format fileFormat) (user, realm string, ok bool) {
	line = strings.TrimRight(line, "\r\n")
	t := strings.TrimSpace(line)
	if t == "" || strings.HasPrefix(t, "#") {
		return "", "", false
	}
	user, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", false
	}
	if format == formatDigest {
		realm, _, ok = strings.Cut(rest, ":")
		if !ok {
			return "", "", false
		}
	}
	return user, realm, true
}

func readPasswordLine(r io.Reader) (string, error) {
	if r == nil {
		return "", errors.New("no --password given and no standard input")
	}
	line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty password (give --password or a line on standard input)")
	}
	return line, nil
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory and a rename, so readers (the polling store) never see a
// half-written file.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
