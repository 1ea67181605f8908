package tlsconf

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// suite describes one TLS 1.0–1.2 cipher suite Go implements, under its
// OpenSSL name, with the attributes OpenSSL's cipher-list keywords select on.
type suite struct {
	id      uint16
	openssl string
	kx      string // kRSA or kECDHE
	au      string // aRSA or aECDSA
	enc     string // AES128, AES256, AES128GCM, AES256GCM, CHACHA20, 3DES, RC4
	mac     string // SHA1, SHA256, SHA384 or AEAD
	tls12   bool   // needs TLS 1.2 (AEAD or SHA-2 MAC)
}

// suites lists every suite crypto/tls can negotiate with TLS 1.2 or older.
// Its order is OpenSSL's "strongest first" order, which is what an ordered
// result of a cipher string starts from; Go ignores the order anyway.
var suites = []suite{
	{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "ECDHE-ECDSA-AES256-GCM-SHA384", "kECDHE", "aECDSA", "AES256GCM", "AEAD", true},
	{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "ECDHE-RSA-AES256-GCM-SHA384", "kECDHE", "aRSA", "AES256GCM", "AEAD", true},
	{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "ECDHE-ECDSA-CHACHA20-POLY1305", "kECDHE", "aECDSA", "CHACHA20", "AEAD", true},
	{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, "ECDHE-RSA-CHACHA20-POLY1305", "kECDHE", "aRSA", "CHACHA20", "AEAD", true},
	{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "ECDHE-ECDSA-AES128-GCM-SHA256", "kECDHE", "aECDSA", "AES128GCM", "AEAD", true},
	{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "ECDHE-RSA-AES128-GCM-SHA256", "kECDHE", "aRSA", "AES128GCM", "AEAD", true},
	{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, "ECDHE-ECDSA-AES128-SHA256", "kECDHE", "aECDSA", "AES128", "SHA256", true},
	{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, "ECDHE-RSA-AES128-SHA256", "kECDHE", "aRSA", "AES128", "SHA256", true},
	{tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, "ECDHE-ECDSA-AES256-SHA", "kECDHE", "aECDSA", "AES256", "SHA1", false},
	{tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, "ECDHE-RSA-AES256-SHA", "kECDHE", "aRSA", "AES256", "SHA1", false},
	{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, "ECDHE-ECDSA-AES128-SHA", "kECDHE", "aECDSA", "AES128", "SHA1", false},
	{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, "ECDHE-RSA-AES128-SHA", "kECDHE", "aRSA", "AES128", "SHA1", false},
	{tls.TLS_RSA_WITH_AES_256_GCM_SHA384, "AES256-GCM-SHA384", "kRSA", "aRSA", "AES256GCM", "AEAD", true},
	{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, "AES128-GCM-SHA256", "kRSA", "aRSA", "AES128GCM", "AEAD", true},
	{tls.TLS_RSA_WITH_AES_128_CBC_SHA256, "AES128-SHA256", "kRSA", "aRSA", "AES128", "SHA256", true},
	{tls.TLS_RSA_WITH_AES_256_CBC_SHA, "AES256-SHA", "kRSA", "aRSA", "AES256", "SHA1", false},
	{tls.TLS_RSA_WITH_AES_128_CBC_SHA, "AES128-SHA", "kRSA", "aRSA", "AES128", "SHA1", false},
	{tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA, "ECDHE-RSA-DES-CBC3-SHA", "kECDHE", "aRSA", "3DES", "SHA1", false},
	{tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, "DES-CBC3-SHA", "kRSA", "aRSA", "3DES", "SHA1", false},
	{tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, "ECDHE-ECDSA-RC4-SHA", "kECDHE", "aECDSA", "RC4", "SHA1", false},
	{tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA, "ECDHE-RSA-RC4-SHA", "kECDHE", "aRSA", "RC4", "SHA1", false},
	{tls.TLS_RSA_WITH_RC4_128_SHA, "RC4-SHA", "kRSA", "aRSA", "RC4", "SHA1", false},
}

// high reports OpenSSL's HIGH strength class: AES and ChaCha20. 3DES and
// RC4 are MEDIUM in OpenSSL 1.1 and later; Go has no LOW or EXPORT suite.
func (s suite) high() bool { return s.enc != "3DES" && s.enc != "RC4" }

// isDefault reports membership of Go's default TLS 1.2 list, which is what
// "DEFAULT" (and an unset tls_ciphers) stands for: forward-secret ECDHE
// suites with AES-GCM, ChaCha20-Poly1305 or AES-CBC with SHA-1. Go dropped
// RSA key exchange, 3DES and the CBC-SHA256 suites from its defaults.
func (s suite) isDefault() bool {
	return s.kx == "kECDHE" && s.high() && s.mac != "SHA256"
}

// keywords maps OpenSSL's cipher-list keywords to a test on a suite. A
// keyword that selects nothing Go implements (DHE, PSK, CAMELLIA, aNULL…)
// is still known: it matches no suite, as it would on an OpenSSL build
// without those ciphers.
var keywords = map[string]func(suite) bool{
	"ALL":                 func(suite) bool { return true },
	"DEFAULT":             suite.isDefault,
	"COMPLEMENTOFDEFAULT": func(s suite) bool { return !s.isDefault() },
	"COMPLEMENTOFALL":     func(suite) bool { return false },
	"HIGH":                suite.high,
	"MEDIUM":              func(s suite) bool { return !s.high() },
	"LOW":                 none, "EXP": none, "EXPORT": none, "EXPORT40": none, "EXPORT56": none,
	"aNULL": none, "eNULL": none, "NULL": none, "ADH": none, "AECDH": none,
	"kRSA": func(s suite) bool { return s.kx == "kRSA" }, "RSA": func(s suite) bool { return s.kx == "kRSA" || s.au == "aRSA" },
	"aRSA":   func(s suite) bool { return s.au == "aRSA" },
	"ECDSA":  func(s suite) bool { return s.au == "aECDSA" },
	"aECDSA": func(s suite) bool { return s.au == "aECDSA" },
	"ECDHE":  ecdhe, "EECDH": ecdhe, "kECDHE": ecdhe, "kEECDH": ecdhe, "ECDH": ecdhe,
	"DH": none, "DHE": none, "EDH": none, "kDHE": none, "kEDH": none, "kDH": none, "kDHr": none, "kDHd": none,
	"aECDH": none, "aDSS": none, "DSS": none, "aDH": none,
	"PSK": none, "kPSK": none, "aPSK": none, "kECDHEPSK": none, "kDHEPSK": none, "kRSAPSK": none,
	"SRP": none, "kSRP": none, "aSRP": none, "GOST": none, "kGOST": none, "aGOST": none, "aGOST01": none,
	"AES":    func(s suite) bool { return strings.HasPrefix(s.enc, "AES") },
	"AES128": func(s suite) bool { return strings.HasPrefix(s.enc, "AES128") },
	"AES256": func(s suite) bool { return strings.HasPrefix(s.enc, "AES256") },
	"AESGCM": func(s suite) bool { return strings.HasSuffix(s.enc, "GCM") },
	"AESCCM": none, "AESCCM8": none,
	"CHACHA20": func(s suite) bool { return s.enc == "CHACHA20" },
	"3DES":     func(s suite) bool { return s.enc == "3DES" },
	"RC4":      func(s suite) bool { return s.enc == "RC4" },
	"DES":      none, "RC2": none, "IDEA": none, "SEED": none, "CAMELLIA": none, "CAMELLIA128": none,
	"CAMELLIA256": none, "ARIA": none, "ARIA128": none, "ARIA256": none, "ARIAGCM": none, "MD5": none,
	"SHA1":      func(s suite) bool { return s.mac == "SHA1" },
	"SHA":       func(s suite) bool { return s.mac == "SHA1" },
	"SHA256":    func(s suite) bool { return s.mac == "SHA256" || s.mac == "AEAD" && !strings.HasPrefix(s.enc, "AES256") },
	"SHA384":    func(s suite) bool { return s.enc == "AES256GCM" },
	"TLSv1.2":   func(s suite) bool { return s.tls12 },
	"TLSv1.0":   func(s suite) bool { return !s.tls12 },
	"TLSv1":     func(s suite) bool { return !s.tls12 },
	"SSLv3":     func(s suite) bool { return !s.tls12 },
	"SUITEB128": none, "SUITEB128ONLY": none, "SUITEB128C2": none, "SUITEB192": none,
	"FIPS": func(s suite) bool { return s.high() && s.enc != "CHACHA20" },
}

func none(suite) bool    { return false }
func ecdhe(s suite) bool { return s.kx == "kECDHE" }

// tls13Names are OpenSSL's TLS 1.3 suite names. OpenSSL ignores them in a
// cipher list (they belong to its separate "ciphersuites" setting); so
// does Impetus, since Go does not let TLS 1.3 suites be chosen.
var tls13Names = map[string]bool{
	"TLS_AES_128_GCM_SHA256": true, "TLS_AES_256_GCM_SHA384": true, "TLS_CHACHA20_POLY1305_SHA256": true,
	"TLS_AES_128_CCM_SHA256": true, "TLS_AES_128_CCM_8_SHA256": true,
}

// opensslParts is the vocabulary of OpenSSL suite names. A hyphenated name
// made only of these parts is a real OpenSSL suite Go lacks (for example
// DHE-RSA-CAMELLIA256-SHA from Momentum's manual): it matches nothing, as
// on an OpenSSL built without it. Any other unknown name is a mistake.
var opensslParts = map[string]bool{
	"ECDHE": true, "DHE": true, "EDH": true, "ECDH": true, "DH": true, "ADH": true, "AECDH": true, "EXP": true,
	"EXP1024": true, "RSA": true, "DSS": true, "ECDSA": true, "PSK": true, "SRP": true, "KRB5": true,
	"AES128": true, "AES256": true, "AES": true, "GCM": true, "CCM": true, "CCM8": true, "CBC": true, "CBC3": true,
	"DES": true, "RC4": true, "RC2": true, "IDEA": true, "SEED": true, "CAMELLIA128": true, "CAMELLIA256": true,
	"ARIA128": true, "ARIA256": true, "CHACHA20": true, "POLY1305": true, "NULL": true, "SHA": true,
	"SHA256": true, "SHA384": true, "MD5": true, "40": true, "56": true, "GOST2001": true, "GOST89": true,
	"GOST94": true, "GOST2012": true,
}

// CipherError is a tls_ciphers string Impetus cannot map: an unknown name,
// a malformed element, or a list that selects no suite Go implements.
type CipherError struct {
	List string // the whole string as configured
	Elem string // the element at fault; "" when the list as a whole selects nothing
	Msg  string
}

// Error implements error.
func (e *CipherError) Error() string {
	if e.Elem == "" {
		return fmt.Sprintf("tlsconf: tls_ciphers %q: %s", e.List, e.Msg)
	}
	return fmt.Sprintf("tlsconf: tls_ciphers %q: %q: %s", e.List, e.Elem, e.Msg)
}

// ParseCiphers maps an OpenSSL cipher-list string onto Go's TLS 1.0–1.2
// cipher suites. Elements are separated by colons, commas or spaces; each
// is a suite name, a keyword, or names and keywords joined by "+" (their
// intersection), optionally prefixed by "!" (remove for good), "-" (remove,
// may be added again) or "+" (move to the end). "@STRENGTH" and
// "@SECLEVEL=n" are accepted; they only affect order and key sizes, which
// Go decides itself.
//
// An empty string and "DEFAULT" return nil, which leaves the choice to Go,
// exactly as Momentum leaves an unset tls_ciphers to OpenSSL's DEFAULT.
// TLS 1.3 suites are always enabled: Go does not make them configurable.
func ParseCiphers(list string) ([]uint16, error) {
	trimmed := strings.TrimSpace(list)
	if trimmed == "" || strings.EqualFold(trimmed, "DEFAULT") {
		return nil, nil
	}
	var (
		order   []int // indexes into suites, in list order
		killed  = make([]bool, len(suites))
		present = make([]bool, len(suites))
	)
	elems := strings.FieldsFunc(trimmed, func(r rune) bool { return r == ':' || r == ',' || r == ' ' || r == '\t' })
	for i, el := range elems {
		if strings.HasPrefix(el, "@") {
			u := strings.ToUpper(el)
			if u == "@STRENGTH" || strings.HasPrefix(u, "@SECLEVEL=") {
				continue
			}
			return nil, &CipherError{List: list, Elem: el, Msg: "unknown special element; known are @STRENGTH and @SECLEVEL=n"}
		}
		op := byte(0)
		if el[0] == '!' || el[0] == '-' || el[0] == '+' {
			op, el = el[0], el[1:]
		}
		// DEFAULT is only valid as the first element in OpenSSL.
		if strings.EqualFold(el, "DEFAULT") && (i != 0 || op != 0) {
			return nil, &CipherError{List: list, Elem: elems[i], Msg: "DEFAULT may only be the first element"}
		}
		match, err := matcher(el)
		if err != nil {
			return nil, &CipherError{List: list, Elem: el, Msg: err.Error()}
		}
		switch op {
		case 0:
			for j, s := range suites {
				if match(s) && !killed[j] && !present[j] {
					present[j] = true
					order = append(order, j)
				}
			}
		case '!', '-':
			order = slices.DeleteFunc(order, func(j int) bool {
				if match(suites[j]) {
					present[j] = false
					return true
				}
				return false
			})
			if op == '!' {
				for j, s := range suites {
					if match(s) {
						killed[j] = true
					}
				}
			}
		case '+':
			var moved []int
			order = slices.DeleteFunc(order, func(j int) bool {
				if match(suites[j]) {
					moved = append(moved, j)
					return true
				}
				return false
			})
			order = append(order, moved...)
		}
	}
	if len(order) == 0 {
		return nil, &CipherError{List: list, Msg: "selects no TLS 1.2 cipher suite that Go implements"}
	}
	out := make([]uint16, len(order))
	for i, j := range order {
		out[i] = suites[j].id
	}
	return out, nil
}

// matcher returns the test for one element without its operator: a
// keyword, a suite name, or a "+"-joined intersection of them.
func matcher(el string) (func(suite) bool, error) {
	if el == "" {
		return nil, fmt.Errorf("empty element")
	}
	parts := strings.Split(el, "+")
	tests := make([]func(suite) bool, 0, len(parts))
	for _, p := range parts {
		t, err := single(p)
		if err != nil {
			return nil, err
		}
		tests = append(tests, t)
	}
	return func(s suite) bool {
		for _, t := range tests {
			if !t(s) {
				return false
			}
		}
		return true
	}, nil
}

func single(name string) (func(suite) bool, error) {
	if name == "" {
		return nil, fmt.Errorf("empty name")
	}
	if t, ok := keywords[name]; ok {
		return t, nil
	}
	// Keywords are case-sensitive in OpenSSL, but an upper-cased "HIGH" style
	// word written in lower case is an obvious intent; suite names are
	// upper case.
	for k, t := range keywords {
		if strings.EqualFold(k, name) {
			return t, nil
		}
	}
	up := strings.ToUpper(name)
	for _, s := range suites {
		if s.openssl == up {
			id := s.id
			return func(s suite) bool { return s.id == id }, nil
		}
	}
	if tls13Names[up] {
		return none, nil
	}
	if knownOpenSSLName(up) {
		return none, nil
	}
	return nil, fmt.Errorf("unknown cipher name or keyword")
}

func knownOpenSSLName(up string) bool {
	parts := strings.Split(up, "-")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if !opensslParts[p] {
			return false
		}
	}
	return true
}

// CipherNames returns the OpenSSL names of ids, for logs and tests.
func CipherNames(ids []uint16) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		name := tls.CipherSuiteName(id)
		for _, s := range suites {
			if s.id == id {
				name = s.openssl
			}
		}
		out = append(out, name)
	}
	return out
}
