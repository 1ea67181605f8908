-- autoresponder.lua: answer chat messages for users who are away or offline.
--
-- Before a chat or normal message with a body is delivered to a local user, the script
-- looks at the user's presence with xmpp.online. When the user has no available
-- resource, or their best resource shows away, xa or dnd, the sender gets a short
-- reply quoting the user's status message. The original message is still delivered
-- (or stored offline): the script returns CONT.
--
-- Replies carry a marker element so that two auto-responders never answer each other,
-- and errors, groupchat and headline messages are never answered.
--
-- Configure with:
--   scriptlet "scriptlet" {
--     script "autoresponder" { source = "autoresponder" }
--   }

local xmpp = require("msys.xmpp")

local MARKER = "urn:xmpp:impetus:autoreply"
local AWAY = { away = true, xa = true, dnd = true }

local mod = {}

local function answerable(stanza)
  local t = stanza:attr("type") or "normal"
  if t ~= "chat" and t ~= "normal" then
    return false
  end
  if stanza:child("autoreply", MARKER) then
    return false
  end
  local body = stanza:child("body")
  return body ~= nil and #body:contents() > 0
end

function mod:message_deliver(sess, stanza)
  if not answerable(stanza) then
    return xmpp.CONT
  end
  local to = xmpp.jid(stanza:attr("to"))
  local from = stanza:attr("from")
  if not to or not from then
    return xmpp.CONT
  end
  local presence = xmpp.online(to:bare())
  local text
  if not presence.availability then
    text = to:user() .. " is offline; your message will be delivered later."
  elseif AWAY[presence.show] then
    text = to:user() .. " is away"
    if presence.status then
      text = text .. ": " .. presence.status
    end
  else
    return xmpp.CONT
  end
  local reply = xml.newnode("message")
  reply:attr("type", stanza:attr("type") or "normal")
  reply:attr("from", to:bare())
  reply:attr("to", from)
  reply:addchild("body"):contents(text)
  reply:addchild("autoreply", MARKER)
  xmpp.routeStanza(reply)
  return xmpp.CONT
end

xmpp.registerModule("autoresponder", mod)
