-- keywords.lua: a keyword filter for messages.
--
-- A message whose body contains a blocked word is not delivered: the sender gets the
-- message back as an error (not-acceptable, with an explanation), the way a server
-- refuses a stanza. Words on the masked list are replaced by asterisks and the
-- message goes on. Words are matched case-insensitively as plain text, not as Lua
-- patterns. Messages from local clients and from other servers are filtered.
--
-- Configure with:
--   scriptlet "scriptlet" {
--     script_path = ( "/etc/impetus/lua" )
--     script "keywords" { source = "keywords" }
--   }

local xmpp = require("msys.xmpp")

local BLOCKED = { "free money", "viagra" }
local MASKED = { "darn", "heck" }

local STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

local mod = {}

local function body_of(stanza)
  return stanza:child("body")
end

local function contains_blocked(text)
  local lower = string.lower(text)
  for _, word in ipairs(BLOCKED) do
    if string.find(lower, word, 1, true) then
      return word
    end
  end
  return nil
end

-- mask replaces every occurrence of each masked word, in any case, by asterisks.
local function mask(text)
  local changed = false
  for _, word in ipairs(MASKED) do
    local lower = string.lower(text)
    local start = 1
    while true do
      local i, j = string.find(lower, word, start, true)
      if not i then
        break
      end
      text = string.sub(text, 1, i - 1) .. string.rep("*", j - i + 1) .. string.sub(text, j + 1)
      start = j + 1
      changed = true
    end
  end
  return text, changed
end

-- refuse answers the sender with the message turned into an error.
local function refuse(stanza)
  local reply = xml.newnode("message")
  reply:attr("type", "error")
  reply:attr("from", stanza:attr("to"))
  reply:attr("to", stanza:attr("from"))
  if stanza:attr("id") then
    reply:attr("id", stanza:attr("id"))
  end
  local err = reply:addchild("error")
  err:attr("type", "modify")
  err:addchild("not-acceptable", STANZAS)
  err:addchild("text", STANZAS):contents("message blocked by the server's content policy")
  xmpp.routeStanza(reply)
end

function mod:client_message_recv(sess, stanza)
  local body = body_of(stanza)
  if not body or stanza:attr("type") == "error" then
    return xmpp.CONT
  end
  local text = body:contents()
  if contains_blocked(text) then
    refuse(stanza)
    return xmpp.DONE
  end
  local masked, changed = mask(text)
  if changed then
    body:contents(masked) -- rewritten in place; the message continues
  end
  return xmpp.CONT
end

function mod:server_message_recv(sess, stanza)
  return self:client_message_recv(sess, stanza)
end

xmpp.registerModule("keywords", mod)
