package test

import (
	"fmt"
	"slices"
	"testing"
)

// mucDomain is the multi-user chat service the MUC tests configure beside testDomain.
const mucDomain = "conference." + testDomain

// mucScope is the domain scope that makes mucDomain a MUC service.
const mucScope = `domain "#xmpp#` + mucDomain + `" {
  XMPP_Role = "server"
  XMPP_Service = "muc"
  MUC_Room_Creation = "local"
  MUC_History_Length = 20
}
`

// startMUCServer starts an IM server whose configuration also hosts mucDomain.
func startMUCServer(t *testing.T, b *storeBackend, users map[string]string) *imServer {
	t.Helper()
	s := newIMServer(t, b, imOptions{Users: users, Extra: mucScope})
	s.start()
	return s
}

// startMUC starts s again on its data, which startMUCServer configured to host mucDomain.
func (s *imServer) startMUC() {
	s.t.Helper()
	s.start()
}

// slixMUCResult is the JSON line muc.py prints.
type slixMUCResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`

	CreateCodes        []int    `json:"create_codes"`
	OwnerAffiliation   string   `json:"owner_affiliation"`
	FormFields         []string `json:"form_fields"`
	BobCodes           []int    `json:"bob_codes"`
	BobSees            []string `json:"bob_sees"`
	GroupchatFrom      string   `json:"groupchat_from"`
	StanzaIDs          bool     `json:"stanza_ids"`
	StanzaIDBy         string   `json:"stanza_id_by"`
	OccupantIDs        []string `json:"occupant_ids"`
	SubjectFrom        string   `json:"subject_from"`
	PMFrom             string   `json:"pm_from"`
	SelfPing           string   `json:"self_ping"`
	RoomFeatures       []string `json:"room_features"`
	RoomName           string   `json:"room_name"`
	ServiceItems       []string `json:"service_items"`
	KickCodes          []int    `json:"kick_codes"`
	BanCodes           []int    `json:"ban_codes"`
	Outcasts           []string `json:"outcasts"`
	BannedRejoin       string   `json:"banned_rejoin"`
	MediatedInviteFrom string   `json:"mediated_invite_from"`
	DirectInviteRoom   string   `json:"direct_invite_room"`
	CarolHistory       []string `json:"carol_history"`
	ArchiveBodies      []string `json:"archive_bodies"`
	ModeratedID        string   `json:"moderated_id"`

	RejoinCodes   []int    `json:"rejoin_codes"`
	RejoinSubject string   `json:"rejoin_subject"`
	RejoinHistory []string `json:"rejoin_history"`
}

func runSlixMUC(t *testing.T, srv *Server, scenario string, args ...string) slixMUCResult {
	t.Helper()
	return runSlixOK[slixMUCResult](t, srv, "muc.py", 2*slixTimeout, scenario, args...)
}

// TestSlixmppMUC runs slixmpp's XEP-0045 plugin against a MUC service on both storage
// backends: three occupants, creation with the configuration form, messages, subject,
// private messages, kick, ban, invitations, the room archive and moderation; then the server
// restarts and the persistent room is back with its name, outcasts and history.
func TestSlixmppMUC(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startMUCServer(t, b, users("alice", "bob", "carol"))
		room := "slix@" + mucDomain
		res := runSlixMUC(t, srv.Server, "muc", "--jid", "alice@"+testDomain, "--peer-jid", "bob@"+testDomain,
			"--third-jid", "carol@"+testDomain, "--room", room)

		check := func(what string, ok bool, got any) {
			t.Helper()
			if !ok {
				t.Errorf("%s: got %v", what, got)
			}
		}
		check("creation codes (110, 201)", slices.Contains(res.CreateCodes, 110) && slices.Contains(res.CreateCodes, 201), res.CreateCodes)
		check("creator's affiliation", res.OwnerAffiliation == "owner", res.OwnerAffiliation)
		check("form fields", slices.Contains(res.FormFields, "muc#roomconfig_persistentroom") && slices.Contains(res.FormFields, "muc#roomconfig_whois"), res.FormFields)
		check("join codes (110, 170)", slices.Contains(res.BobCodes, 110) && slices.Contains(res.BobCodes, 170), res.BobCodes)
		check("occupants seen on join", slices.Contains(res.BobSees, "Alice"), res.BobSees)
		check("groupchat from", res.GroupchatFrom == room+"/Alice", res.GroupchatFrom)
		check("one stanza-id for all", res.StanzaIDs, res.StanzaIDs)
		check("stanza-id by", res.StanzaIDBy == room, res.StanzaIDBy)
		check("one occupant id for the sender", len(res.OccupantIDs) == 1 && res.OccupantIDs[0] != "", res.OccupantIDs)
		check("subject from", res.SubjectFrom == room+"/Alice", res.SubjectFrom)
		check("private message from", res.PMFrom == room+"/Bob", res.PMFrom)
		check("self-ping", res.SelfPing == "ok", res.SelfPing)
		for _, f := range []string{"http://jabber.org/protocol/muc", "muc_persistent", "urn:xmpp:mam:2", "urn:xmpp:message-moderate:0", "http://jabber.org/protocol/muc#self-ping-optimization"} {
			check("room feature "+f, slices.Contains(res.RoomFeatures, f), res.RoomFeatures)
		}
		check("room name", res.RoomName == "Slix Room", res.RoomName)
		check("service items", slices.Contains(res.ServiceItems, room), res.ServiceItems)
		check("kick codes (307)", slices.Contains(res.KickCodes, 307) && slices.Contains(res.KickCodes, 110), res.KickCodes)
		check("ban codes (301)", slices.Contains(res.BanCodes, 301), res.BanCodes)
		check("outcasts", slices.Equal(res.Outcasts, []string{"bob@" + testDomain}), res.Outcasts)
		check("banned rejoin", res.BannedRejoin == "forbidden", res.BannedRejoin)
		check("mediated invitation", res.MediatedInviteFrom == "alice@"+testDomain, res.MediatedInviteFrom)
		check("direct invitation", res.DirectInviteRoom == room, res.DirectInviteRoom)
		check("history on rejoin", slices.Contains(res.CarolHistory, "hello room"), res.CarolHistory)
		check("archive", slices.Contains(res.ArchiveBodies, "hello room"), res.ArchiveBodies)
		check("moderation notice", res.ModeratedID != "", res.ModeratedID)

		// The persistent room survives a restart.
		srv.Server.stop(t)
		srv.startMUC()
		res = runSlixMUC(t, srv.Server, "rejoin", "--jid", "alice@"+testDomain, "--room", room)
		check("rejoin codes", slices.Contains(res.RejoinCodes, 110) && !slices.Contains(res.RejoinCodes, 201), res.RejoinCodes)
		check("subject after restart", res.RejoinSubject == "Slix topic", res.RejoinSubject)
		check("room name after restart", res.RoomName == "Slix Room", res.RoomName)
		check("outcasts after restart", slices.Equal(res.Outcasts, []string{"bob@" + testDomain}), res.Outcasts)
		check("moderated message gone from history", !slices.Contains(res.RejoinHistory, "hello room"), fmt.Sprint(res.RejoinHistory))
	})
}
