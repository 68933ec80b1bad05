"""Parent domains that change how a name is scored, kept in one place.

Three kinds, all matched as a parent (``x.cloudfront.net`` matches ``cloudfront.net``):

- ``GENERATED_LABEL_PARENTS``: CDN, cloud and platform edges whose own systems put hashed or
  random-looking labels under them (``d1a2b3c4.cloudfront.net``). Those labels are normal; names
  under these parents score 0 and say why.
- ``REPUTATION_PARENTS``: DNS-based reputation services (DNSBL, URI blocklists, anti-virus hash
  and URL lookups). Their clients put reversed IPs and hex/base32 hashes in labels on purpose.
- ``DYNAMIC_DNS_PARENTS``: dynamic-DNS providers. A name under them is chosen by whoever
  registered it, so the label left of the parent is scored as if it were a registered domain.
  Many are in the public suffix list's private section already; this list covers the rest and
  keeps the behaviour independent of the list's version.
"""

from __future__ import annotations

GENERATED_LABEL_PARENTS: frozenset[str] = frozenset(
    {
        # Akamai
        "akamai.net", "akamaiedge.net", "akamaihd.net", "akamaized.net", "akamaitechnologies.com",
        "edgekey.net", "edgesuite.net", "akadns.net", "akamai-staging.net", "akam.net",
        # Amazon
        "amazonaws.com", "cloudfront.net", "awsglobalaccelerator.com", "elb.amazonaws.com",
        "awsdns-cn.com", "a2z.com",
        # Microsoft / Azure
        "azureedge.net", "azurefd.net", "trafficmanager.net", "msedge.net", "cloudapp.net",
        "cloudapp.azure.com", "windows.net", "azure-dns.com", "msecnd.net", "aspnetcdn.com",
        "footprint.net", "a-msedge.net", "s-msedge.net", "l-msedge.net", "dual-s-msedge.net",
        "microsoftonline.com", "live.net", "office.net", "windowsupdate.com",
        # Google
        "googleusercontent.com", "googlevideo.com", "gvt1.com", "gvt2.com", "1e100.net",
        "googlesyndication.com", "googleapis.com", "gstatic.com", "doubleclick.net",
        # Fastly, Cloudflare and other CDNs
        "fastly.net", "fastlylb.net", "fastly-edge.com", "cloudflare.net", "cloudflare.com",
        "cdn77.org", "cdn77.net", "edgecastcdn.net", "systemcdn.net", "llnwd.net", "llnw.net",
        "b-cdn.net", "kxcdn.com", "cdn.cloudflare.net", "stackpathdns.com", "hwcdn.net",
        "incapdns.net", "impervadns.net", "lldns.net", "cdngc.net", "alicdn.com",
        "kunlunaq.com", "tcdn.qq.com", "cdn20.com", "chinacache.net", "cdnetworks.net",
        "gcdn.co", "bunnycdn.com", "jsdelivr.net",
        # Apple, Meta and other large services with generated hostnames
        "aaplimg.com", "apple-dns.net", "icloud-content.com", "mzstatic.com", "cdn-apple.com",
        "fbcdn.net", "facebook.net", "whatsapp.net", "tiktokcdn.com", "byteoversea.com",
        "ytimg.com", "twimg.com", "spotifycdn.com", "scdn.co", "nflxvideo.net", "nflxso.net",
        "steamcontent.com", "steamserver.net", "xboxlive.com",
        # hosting control planes
        "herokudns.com", "vercel-dns.com", "netlifyglobalcdn.com", "digitaloceanspaces.com",
    }
)

REPUTATION_PARENTS: frozenset[str] = frozenset(
    {
        # IP and domain blocklists (reversed IPv4 / nibble IPv6 or a domain under the zone)
        "spamhaus.org", "spamhaus.net", "spameatingmonkey.net", "spamcop.net", "sorbs.net",
        "barracudacentral.org", "surbl.org", "uribl.com", "dnswl.org", "mailspike.net",
        "senderscore.com", "abuseat.org", "psbl.org", "nordspam.com", "s5h.net",
        "dnsbl.info", "blocklist.de", "junkemailfilter.com", "msrbl.net", "spamrats.com",
        "manitu.net", "anonmails.de", "rbl.jp", "mailpolice.com", "invaluement.com",
        "abuse.ch", "bondedsender.org", "dq.spamhaus.net",
        # hash registries and anti-virus / URL reputation lookups over DNS
        "cymru.com", "sophosxl.net", "sophosxl.com", "mcafee.com", "trendmicro.com",
        "e5.sk", "eset.com", "kaspersky-labs.com", "avast.com", "avg.com", "avcdn.net",
        "bitdefender.net", "norton.com", "symantec.com", "symantecliveupdate.com",
        "webroot.com", "brightcloud.com", "f-secure.com", "fsapi.com", "drweb.com",
        "malwarebytes.com", "clamav.net", "zvelo.com", "opendns.com", "umbrella.com",
        "quad9.net", "virustotal.com",
    }
)

DYNAMIC_DNS_PARENTS: frozenset[str] = frozenset(
    {
        "duckdns.org", "no-ip.org", "no-ip.biz", "no-ip.info", "no-ip.net", "noip.me",
        "ddns.net", "hopto.org", "zapto.org", "sytes.net", "myftp.org", "myftp.biz",
        "servebeer.com", "serveftp.com", "servegame.com", "servehttp.com", "serveblog.net",
        "redirectme.net", "bounceme.net", "3utilities.com", "ddnsking.com", "gotdns.ch",
        "dyndns.org", "dyndns.biz", "dyndns.info", "dynalias.com", "dnsalias.com",
        "homeip.net", "changeip.com", "changeip.net", "afraid.org", "mooo.com", "dynu.com",
        "dynu.net", "dynv6.net", "myddns.me", "now-dns.com", "ydns.eu", "publicvm.com",
        "freeddns.org", "ddnsfree.com", "ddnsgeek.com", "dns-dynamic.net", "dynserv.org",
        "duckdns.com", "portmap.io", "dnsdynamic.org", "x10host.com", "3322.org", "oray.net",
        "f3322.net", "kozow.com", "linkpc.net", "ooguy.com", "theworkpc.com", "casacam.net",
        "dvrdns.org", "camdvr.org", "ddns.me", "dynamic-dns.net", "dyn-o-saur.com",
        "dynns.com",
    }
)


def matching_parent(name: str, parents: frozenset[str]) -> str | None:
    """The parent of ``name`` (or ``name`` itself) that is in ``parents``, longest first."""
    parts = name.split(".")
    for i in range(len(parts)):
        candidate = ".".join(parts[i:])
        if candidate in parents:
            return candidate
    return None
