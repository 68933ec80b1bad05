"""Is an address local to the host or its link (never the peer of a beacon or a scan)?

Loopback, link-local, multicast, broadcast and unspecified addresses, decided on the text
(the rules meet many new addresses; parsing each with ipaddress would cost more than the
rest of their per-flow work)."""

from __future__ import annotations

_V6_LINK_LOCAL = ("fe8", "fe9", "fea", "feb")


def is_local(addr: str) -> bool:
    a = addr.lower()
    if a.startswith("::ffff:") and "." in a:  # IPv4-mapped
        a = a[7:]
    if "." in a and ":" not in a:
        first, _, rest = a.partition(".")
        if not first.isdigit():
            return True  # not an address: nothing to judge
        o = int(first)
        return (o == 127 or o == 0 or 224 <= o <= 239 or a == "255.255.255.255"
                or (o == 169 and rest.startswith("254.")))
    if ":" not in a:
        return True
    a = a.split("%", 1)[0]
    return a in ("::1", "::") or a.startswith(("ff", *_V6_LINK_LOCAL))
