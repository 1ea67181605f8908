package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// slixRegisterResult is the JSON line muc_register.py prints.
type slixRegisterResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`

	ConfigFields       []string   `json:"config_fields"`
	NickBefore         string     `json:"nick_before"`
	RegisterFormType   string     `json:"register_form_type"`
	RegisterFields     []string   `json:"register_fields"`
	NickAfter          string     `json:"nick_after"`
	Registered         bool       `json:"registered"`
	RegisteredUsername string     `json:"registered_username"`
	Members            [][]string `json:"members"`
	CarolAsBobby       string     `json:"carol_as_bobby"`
	CarolRole          string     `json:"carol_role"`
	BobAffiliation     string     `json:"bob_affiliation"`
	BobSees            []string   `json:"bob_sees"`
	NickCancelled      string     `json:"nick_cancelled"`
	AfterCancel        string     `json:"after_cancel"`
}

// TestSlixmppMUCRegistration runs slixmpp's XEP-0045 and XEP-0077 plugins through room
// registration (§7.10), the reserved-nickname disco node (§7.12), the reserved nickname on
// join, the member list's nicknames and presence broadcast restricted by role.
func TestSlixmppMUCRegistration(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startMUCServer(t, b, users("alice", "bob", "carol"))
		room := "reg@" + mucDomain

		ctx, cancel := context.WithTimeout(context.Background(), 2*slixTimeout)
		defer cancel()
		script := filepath.Join(filepath.Dir(slixScript(t)), "muc_register.py")
		cmd := exec.CommandContext(ctx, python, script, "register", "--host", "127.0.0.1",
			"--port", strconv.Itoa(srv.Server.Port4), "--cert", srv.Server.CertPath,
			"--jid", "alice@"+testDomain, "--peer-jid", "bob@"+testDomain, "--third-jid", "carol@"+testDomain, "--room", room)
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("slixmpp log:\n%s", stderr.String())
			}
		})
		if ctx.Err() != nil {
			t.Fatalf("slixmpp did not finish within %v", 2*slixTimeout)
		}
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("running slixmpp: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		var res slixRegisterResult
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
			t.Fatalf("slixmpp printed no JSON result (exit %v): %v\nstdout:\n%s", err, jerr, stdout.String())
		}
		if !res.OK {
			t.Fatalf("slixmpp failed: %s", res.Error)
		}
		check := func(what string, ok bool, got any) {
			t.Helper()
			if !ok {
				t.Errorf("%s: got %v", what, got)
			}
		}
		check("presencebroadcast in the configuration form", slices.Contains(res.ConfigFields, "muc#roomconfig_presencebroadcast"), res.ConfigFields)
		check("no nick before registration", res.NickBefore == "", res.NickBefore)
		check("registration FORM_TYPE", res.RegisterFormType == "http://jabber.org/protocol/muc#register", res.RegisterFormType)
		check("registration fields", slices.Contains(res.RegisterFields, "muc#register_roomnick"), res.RegisterFields)
		check("reserved nick after registration", res.NickAfter == "Bobby", res.NickAfter)
		check("registered", res.Registered && res.RegisteredUsername == "Bobby", res.RegisteredUsername)
		check("member list", len(res.Members) == 1 && slices.Equal(res.Members[0], []string{"bob@" + testDomain, "Bobby"}), res.Members)
		check("reserved nick refused to another user", res.CarolAsBobby == "conflict", res.CarolAsBobby)
		check("unaffiliated user in a moderated room", res.CarolRole == "visitor", res.CarolRole)
		check("registered user's affiliation", res.BobAffiliation == "member", res.BobAffiliation)
		check("visitor's presence not broadcast", slices.Equal(res.BobSees, []string{"Alice", "Bobby"}), res.BobSees)
		check("nick released by cancelling", res.NickCancelled == "", res.NickCancelled)
		check("form offered again after cancelling", res.AfterCancel == "form", res.AfterCancel)
	})
}
