"""The optional mDNS announcement of the Wyoming service (``_wyoming._tcp``), so Home Assistant discovers it.

Home Assistant's Wyoming integration browses ``_wyoming._tcp.local.`` and offers every instance it finds; the
instance name is what it shows. The address announced is the listener's own, or, for a listener on every address,
the one this machine reaches the local network from (no packet is sent to find it).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket

from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

log = logging.getLogger("harmony.wyoming")
SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


def instance_name(name: str | None) -> str:
    """The announced name: the one given, else ``harmony-<hostname>``; dots would break the service name."""
    chosen = name or "harmony-" + socket.gethostname().split(".")[0]
    return re.sub(r"[.\s]+", "-", chosen).strip("-")[:63] or "harmony"


def lan_address() -> str:
    """The address this machine reaches the local network from: a UDP socket 'connected' to the mDNS group
    (connect on UDP sends nothing) says which source address the kernel would use."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((MDNS_GROUP, 5353))
        return probe.getsockname()[0]


def announced_address(listen_host: str) -> str:
    """The address to announce for a listener on ``listen_host``: itself when it is one address, else the LAN's."""
    try:
        address = ipaddress.ip_address(listen_host)
    except ValueError:  # a host name: what it resolves to
        return socket.gethostbyname(listen_host)
    if address.is_unspecified:
        return lan_address()
    return str(address)


def service_info(name: str | None, address: str, port: int) -> ServiceInfo:
    """The record registered for the Wyoming listener (pure)."""
    instance = instance_name(name)
    return ServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}",
                       addresses=[ipaddress.ip_address(address).packed], port=port,
                       properties={"engine": "harmony"}, server=f"{instance}.local.")


class Announcement:
    def __init__(self, info: ServiceInfo) -> None:
        self.info = info
        self.zeroconf: AsyncZeroconf | None = None

    async def start(self) -> None:
        if ipaddress.ip_address(self.info.parsed_addresses()[0]).is_loopback:
            log.warning("the Wyoming listener is on a loopback address: Home Assistant on another machine cannot "
                        "reach it (use --wyoming-host 0.0.0.0)")
        self.zeroconf = AsyncZeroconf()
        await self.zeroconf.async_register_service(self.info)
        log.info("announced %s on mDNS", self.info.name)

    async def stop(self) -> None:
        if self.zeroconf is not None:
            try:
                await self.zeroconf.async_unregister_service(self.info)
            finally:
                await self.zeroconf.async_close()
