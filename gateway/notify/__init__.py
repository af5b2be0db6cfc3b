"""Messages to a member's own address: email over SMTP, SMS through an HTTP provider. Today it
carries verification codes (``members.ContactSender``); the reorder loops' reminders go the
same way (``send_mail``, ``send_text``). This is its public face."""

from gateway.errors import Undelivered
from gateway.notify.senders import CodeSenders, HttpSms, Smtp

__all__ = ["CodeSenders", "HttpSms", "Smtp", "Undelivered"]
