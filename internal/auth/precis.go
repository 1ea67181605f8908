package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/secure/precis"
)

// PrepareUsername enforces the PRECIS UsernameCaseMapped profile (RFC 8265
// §3.3) on a localpart.
func PrepareUsername(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("auth: username is not valid UTF-8")
	}
	out, err := precis.UsernameCaseMapped.String(s)
	if err != nil {
		return "", fmt.Errorf("auth: invalid username: %w", err)
	}
	if out == "" {
		return "", errors.New("auth: empty username")
	}
	return out, nil
}

// PreparePassword enforces the PRECIS OpaqueString profile (RFC 8265 §4.2)
// on a password.
func PreparePassword(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("auth: password is not valid UTF-8")
	}
	out, err := precis.OpaqueString.String(s)
	if err != nil {
		return "", fmt.Errorf("auth: invalid password: %w", err)
	}
	if out == "" {
		return "", errors.New("auth: empty password")
	}
	return out, nil
}

// NormalizeDomain lowercases a domain name and drops a trailing dot, the
// form in which stores index per-domain users.
func NormalizeDomain(s string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if d == "" || !utf8.ValidString(d) || strings.ContainsAny(d, "@/: \t\r\n") {
		return "", fmt.Errorf("auth: invalid domain %q", s)
	}
	return d, nil
}

// ParseUser splits a password-file user field, "localpart" (valid for every
// hosted domain, domain "") or "localpart@domain", and prepares both parts.
func ParseUser(field string) (localpart, domain string, err error) {
	local, dom, found := strings.Cut(field, "@")
	localpart, err = PrepareUsername(local)
	if err != nil {
		return "", "", err
	}
	if found {
		domain, err = NormalizeDomain(dom)
		if err != nil {
			return "", "", err
		}
	}
	return localpart, domain, nil
}
