-- chatstates.lua: drop chat-state notifications (XEP-0085) that carry no text.
--
-- Momentum's advice for XMPP gateways is to ignore any message unless it has a body
-- longer than zero, and not to decide on the chat-state element alone, because the
-- "active" state can ride along with a real message. This script does exactly that
-- for messages sent by local clients and by other servers: a message with a
-- chat-state child and no non-empty body is dropped; everything else passes.
--
-- Configure with:
--   scriptlet "scriptlet" {
--     script "chatstates" { source = "chatstates" }
--   }

local xmpp = require("msys.xmpp")

local CHATSTATES = "http://jabber.org/protocol/chatstates"
local STATES = { active = true, composing = true, paused = true, inactive = true, gone = true }

local mod = {}

-- has_text tells whether the message has a body with at least one character.
local function has_text(stanza)
  for _, child in ipairs(stanza:children()) do
    if child:name() == "body" and #child:contents() > 0 then
      return true
    end
  end
  return false
end

local function is_chatstate_only(stanza)
  if has_text(stanza) then
    return false
  end
  for _, child in ipairs(stanza:children()) do
    if child:namespace() == CHATSTATES and STATES[child:name()] then
      return true
    end
  end
  return false
end

function mod:client_message_recv(sess, stanza)
  if is_chatstate_only(stanza) then
    return xmpp.DONE -- consumed: nobody receives it
  end
  return xmpp.CONT
end

-- Notifications from other servers are dropped the same way before delivery.
function mod:server_message_recv(sess, stanza)
  return self:client_message_recv(sess, stanza)
end

xmpp.registerModule("chatstates", mod)
