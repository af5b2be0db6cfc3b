"""Messages to a member's own address: email over SMTP, SMS through an HTTP provider. Today it
carries verification codes (``members.ContactSender``); the engagement engine's reminders will
go the same way. This is its public face."""

from gateway.notify.senders import CodeSenders, HttpSms, Smtp

__all__ = ["CodeSenders", "HttpSms", "Smtp"]
