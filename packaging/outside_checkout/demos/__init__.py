"""Placeholder installed by the constcl-zoo wheel; the real package lives in a checkout of the repository."""

from constcl_zoo.checkout_hint import refuse

refuse(__name__)
