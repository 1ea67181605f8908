package httpd

import (
	"encoding/json"
	"net/http"

	"impetus/internal/stanza"
)

// XEP-0156 link relations of the connection methods this listener serves.
const (
	RelBOSH      = "urn:xmpp:alt-connections:xbosh"
	RelWebSocket = "urn:xmpp:alt-connections:websocket"
)

// serveHostMeta answers /.well-known/host-meta with an XRD document (RFC 6415, XEP-0156 §3).
func (s *Server) serveHostMeta(w http.ResponseWriter, r *http.Request) {
	if !s.hostMetaRequest(w, r) {
		return
	}
	ws, bosh := s.endpoints(r)
	b := []byte("<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n")
	link := func(rel, href string) {
		if href == "" {
			return
		}
		b = append(b, "  <Link rel='"...)
		b = append(b, rel...)
		b = append(b, "' href='"...)
		b = stanza.AppendAttrValue(b, href)
		b = append(b, "'/>\n"...)
	}
	link(RelBOSH, bosh)
	link(RelWebSocket, ws)
	b = append(b, "</XRD>\n"...)
	w.Header().Set("Content-Type", "application/xrd+xml; charset=utf-8")
	_, _ = w.Write(b)
}

// serveHostMetaJSON answers /.well-known/host-meta.json with the JRD form (RFC 6415 App. A).
func (s *Server) serveHostMetaJSON(w http.ResponseWriter, r *http.Request) {
	if !s.hostMetaRequest(w, r) {
		return
	}
	ws, bosh := s.endpoints(r)
	type link struct {
		Rel  string `json:"rel"`
		Href string `json:"href"`
	}
	doc := struct {
		Links []link `json:"links"`
	}{Links: []link{}}
	if bosh != "" {
		doc.Links = append(doc.Links, link{RelBOSH, bosh})
	}
	if ws != "" {
		doc.Links = append(doc.Links, link{RelWebSocket, ws})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

// hostMetaRequest handles what both host-meta forms share: CORS, which XEP-0156 §3 asks for so
// that web clients on other origins can read the document, and the allowed methods.
func (s *Server) hostMetaRequest(w http.ResponseWriter, r *http.Request) bool {
	s.corsHeaders(w)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
	return false
}
