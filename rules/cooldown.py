"""cooldown: a rule's firings of one dedup key that follow each other closely are one incident.

Every rule has a **dedup key**: what its incidents are about, besides time (``Kind.dedup_key``): a
sensor, a zone or group, an object and its fence, a grid block. Each kind opens a new incident
when its condition fires anew for a key: a new ``dedup`` bucket, a new window, a new episode.
With ``cooldown: D``, a new firing whose first event comes less than ``D`` after the key's
previous incident was last active (its newest event, or its resolution) is no new incident: it
is counted on that incident, which keeps its id, its start and its place. Every snapshot shows
what the chain of firings adds up to:

- ``revision``: the sum of the firings' revisions (it grows with every change of any of them);
- ``evidence.count``: the sum of their counts; ``evidence``: their first events, in firing order;
- ``last_event_at`` and ``window_end``: the latest of them; ``value``: the worst; ``severity``: the highest;
- ``status`` and ``resolved_at``: the newest firing's (a resolved incident reopens);
- ``details``: the newest snapshot's, and ``cooldown: {firings, last_firing}``.

A chain goes on as long as firings keep coming within ``D`` of each other. A firing is never
dropped: whatever it adds later (a late event in its bucket) is added to its chain.

State, per rule; the first segment ``cool:`` keeps these keys away from every kind's ``tick``:

- ``cool:RULE|k|KEY``: the key's chains that may still change (``chains``: the id, last
  activity, end and whether an episode in it is open, of each) and ``gone``: firings that end
  before it can no longer change. It expires after its chains, except for kinds that send an old
  episode again (``Kind.resends_episodes``: sustained and geofence, whose keys are sensors and
  objects), where it is kept as long as the rule is, about as small as the subject's own entry.
- ``cool:RULE|c|ID``: a chain (``ID`` is its first incident's): its sums, its first incident's
  place and times, its evidence, and what each firing that can still change added so far
  (``m``). It expires like the kinds' entries, once its windows have ended and its cooldown has
  passed (``end``), unless an episode in it is still open (``closed: False``).

A snapshot of a firing that is in no chain and ends before ``gone`` belongs to a chain that
expired, or has left its chain's ``m``: what it added was sent then, and it is not sent again (a
kind re-sends an old episode when a reading comes out of order). Entries are copied on touch and
marked with the source position, as every entry is: a re-delivered message changes nothing and
sends its chains' snapshots again.

For replay to equal stream, a key's firings must come in event-time order (which firing starts
a chain depends on it), as the kinds that follow a subject need anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rules.kinds.base import Kind, Scope
from rules.model import Evidence, Incident
from rules.spec import SEVERITIES
from rules.state import EVIDENCE_CAP, Entry, from_ms, to_ms


class Cooldown:
    """Folds the snapshots one rule emits into chains of firings (see the module docstring)."""

    def __init__(self, kind: Kind, cooldown_ms: int, lateness_ms: int, auto_resolve_ms: int = 0) -> None:
        self.kind = kind
        self.cooldown_ms = cooldown_ms
        self.lateness_ms = lateness_ms
        self.auto_resolve_ms = auto_resolve_ms
        self.prefix = f"cool:{kind.state_prefix}"
        self.higher_is_worse = getattr(kind.rule, "op", ">") not in ("<", "<=")

    def apply(self, scope: Scope, incident: Incident) -> Incident | None:
        """The snapshot to send for ``incident``, a snapshot of one firing: its chain's, or None."""
        pointer, fresh = scope.load(f"{self.prefix}|k|{self.kind.dedup_key(incident)}", _pointer)
        found = self._find(scope, pointer, incident.id, fresh)
        first, end = to_ms(incident.first_event_at), to_ms(incident.window_end)
        if found is None:
            if not fresh or end < int(pointer["gone"]):  # its chain expired, or it left it: sent then
                return None
            chain = self._join(scope, pointer, incident, first)
        else:
            chain, fresh = scope.load(found, _empty)
            if not fresh:  # a re-delivery: the chain as it stands
                return self._snapshot(chain, incident)
        self._add(chain, incident, first, end)
        self._settle(chain, pointer)
        out = self._snapshot(chain, incident)
        if self.auto_resolve_ms:  # what a tick resolves it from, once it can no longer change
            chain["snap"] = out.model_dump(mode="json")
        return out

    # -- auto-resolve ------------------------------------------------------------------------------

    def tick(self, scope: Scope, watermark_ms: int, keys: Sequence[str]) -> None:
        """Resolve the open incidents no event has updated for ``auto_resolve`` (``rules.spec``).

        An incident is resolved only once it can no longer change, so that the same events resolve
        the same incidents whenever the ticks come (replay ticks once, at the end): its windows have
        ended and the allowed lateness has passed (no event can fall in them), no firing can join it
        any more (its cooldown has passed too), no episode in it is open, and its newest event is
        ``auto_resolve`` old. It resolves at that newest event plus ``auto_resolve``.
        """
        late = self.lateness_ms
        for key in keys:
            if "|c|" not in key:
                continue
            chain = scope.peek(key)
            if not chain or chain.get("st") != "open" or chain.get("open") or "snap" not in chain:
                continue
            at = int(chain["le"]) + self.auto_resolve_ms
            if max(at, int(chain["we"]) + late, int(chain["act"]) + self.cooldown_ms + late) > watermark_ms:
                continue
            chain = scope.get(key)
            assert chain is not None
            chain.update(st="resolved", ra=at, r=int(chain["r"]) + 1, auto=True)
            chain.pop("closed", None)  # it may expire now
            snap = Incident.model_validate(chain.pop("snap"))
            scope.put(key, chain)
            details = {**snap.details, "auto_resolved": True}
            scope.emit(
                snap.model_copy(
                    update={
                        "status": "resolved",
                        "resolved_at": from_ms(at),
                        "revision": int(chain["r"]),
                        "details": details,
                    }
                )
            )

    def _find(self, scope: Scope, pointer: Entry, incident_id: str, fresh: bool) -> str | None:
        """The key of the chain that counts this firing, if any; forgets the chains that expired."""
        kept: list[list[Any]] = []
        found = None
        for link in pointer["chains"]:
            key = f"{self.prefix}|c|{link[0]}"
            chain = scope.peek(key)
            if chain is None:  # expired (Engine.expire) after its end: every firing in it was sent
                if fresh:
                    pointer["gone"] = max(int(pointer["gone"]), int(link[2]) + 1)
                continue
            kept.append(link)
            if found is None and incident_id in chain["m"]:
                found = key
        if fresh:
            pointer["chains"] = kept
        return found

    def _join(self, scope: Scope, pointer: Entry, incident: Incident, first: int) -> Entry:
        """A new firing's chain: the key's newest one while its cooldown lasts, else a new one."""
        if pointer["chains"] and self.cooldown_ms > 0:
            head, act = pointer["chains"][-1][:2]
            if first - int(act) < self.cooldown_ms:
                chain, _ = scope.load(f"{self.prefix}|c|{head}", _empty)
                chain["k"] = int(chain["k"]) + 1
                chain["m"][incident.id] = [0, 0, first, first]
                return chain
        chain, _ = scope.load(f"{self.prefix}|c|{incident.id}", _empty)
        chain.update(
            head=incident.id,
            r=0,
            n=0,
            k=1,
            m={incident.id: [0, 0, first, first]},
            ws=to_ms(incident.window_start),
            fe=first,
            we=to_ms(incident.window_end),
            le=to_ms(incident.last_event_at),
            act=first,
            lon=incident.lon,
            lat=incident.lat,
            zone=incident.zone_id,
            zn=incident.zone_name,
            x=incident.value,
            sev=SEVERITIES.index(incident.severity),
            newest=first,
            st=incident.status,
            ra=None,
            last=incident.id,
            open=[],
            ev={},
        )
        pointer["chains"].append([incident.id, first, first, False])
        return chain

    def _add(self, chain: Entry, incident: Incident, first: int, end: int) -> None:
        """Count a firing's newest snapshot on its chain: what it adds since its previous one."""
        held = chain["m"][incident.id]
        count = incident.evidence.count
        chain["r"] = int(chain["r"]) + incident.revision - int(held[0])
        chain["n"] = int(chain["n"]) + count - int(held[1])
        chain["m"][incident.id] = [incident.revision, count, first, end]
        last = to_ms(incident.last_event_at)
        resolved = to_ms(incident.resolved_at) if incident.resolved_at is not None else None
        chain["we"] = max(int(chain["we"]), end)
        chain["le"] = max(int(chain["le"]), last)
        chain["act"] = max(int(chain["act"]), last, resolved or last)
        x = float(chain["x"])
        chain["x"] = max(x, incident.value) if self.higher_is_worse else min(x, incident.value)
        chain["sev"] = max(int(chain["sev"]), SEVERITIES.index(incident.severity))
        if first >= int(chain["newest"]) and not chain.get("auto"):  # the newest firing: open or not
            chain.update(newest=first, st=incident.status, ra=resolved, last=incident.id)
        evidence = chain["ev"]
        if incident.id in evidence or sum(len(ids) for ids, _ in evidence.values()) < EVIDENCE_CAP:
            evidence[incident.id] = [list(incident.evidence.event_ids), list(incident.evidence.values)]
        opened = [i for i in chain["open"] if i != incident.id]
        if self.kind.open_ended(incident):
            opened.append(incident.id)
        chain["open"] = opened

    def _settle(self, chain: Entry, pointer: Entry) -> None:
        """Drop the firings that can no longer change from the chain; say how long it must live.

        A firing's bucket or window takes no more events once the key's newest event is more than
        the allowed lateness past its end (a later one would be late); an open episode can change
        until it resolves. The sums keep what the dropped firings added, and the pointer's
        ``gone`` tells a snapshot of one of them, sent again by its kind, from a new firing.
        """
        floor = int(chain["le"]) - self.lateness_ms
        opened = set(chain["open"])
        keep = {chain["head"], chain["last"], *opened}
        members = chain["m"]
        dropped = [i for i, held in members.items() if i not in keep and int(held[3]) < floor]
        for i in dropped:
            del members[i]
        if dropped:
            pointer["gone"] = max(int(pointer["gone"]), floor)
        chain["end"] = max(int(chain["we"]), int(chain["act"]) + self.cooldown_ms)
        # kept from expiry while an episode in it is open, or while it waits to be auto-resolved
        held = bool(opened) or (self.auto_resolve_ms > 0 and chain["st"] == "open" and not chain.get("auto"))
        if held:
            chain["closed"] = False
        else:
            chain.pop("closed", None)
        for link in pointer["chains"]:
            if link[0] == chain["head"]:
                link[1:] = [int(chain["act"]), int(chain["end"]), held]
        if not self.kind.resends_episodes:
            # nothing sends an expired chain's firing again: the key's pointer may expire after
            # its chains (a key seen once, such as a report's id, leaves nothing behind), but not
            # while one of them has an open episode
            pointer["end"] = max(int(pointer.get("end") or chain["end"]), int(chain["end"]))
            if any(len(link) > 3 and link[3] for link in pointer["chains"]):
                pointer["closed"] = False
            else:
                pointer.pop("closed", None)

    def _snapshot(self, chain: Entry, incident: Incident) -> Incident:
        """The chain as one incident; a chain of one firing is that firing's own snapshot."""
        if int(chain["k"]) <= 1 and not chain.get("auto"):
            return incident
        ids: list[str] = []
        values: list[float] = []
        for held_ids, held_values in chain["ev"].values():
            ids.extend(held_ids)
            values.extend(held_values)
        resolved = chain["st"] == "resolved"
        update: dict[str, Any] = {
            "id": chain["head"],
            "revision": int(chain["r"]),
            "window_start": from_ms(int(chain["ws"])),
            "window_end": from_ms(int(chain["we"])),
            "first_event_at": from_ms(int(chain["fe"])),
            "last_event_at": from_ms(int(chain["le"])),
            "lon": float(chain["lon"]),
            "lat": float(chain["lat"]),
            "zone_id": chain["zone"],
            "zone_name": chain["zn"],
            "value": float(chain["x"]),
            "severity": SEVERITIES[int(chain["sev"])],
            "status": "resolved" if resolved else "open",
            "resolved_at": from_ms(int(chain["ra"])) if resolved and chain["ra"] is not None else None,
            "details": self._details(chain, incident),
            "evidence": Evidence(event_ids=ids[:EVIDENCE_CAP], values=values[:EVIDENCE_CAP], count=int(chain["n"])),
        }
        return incident.model_copy(update=update)

    @staticmethod
    def _details(chain: Entry, incident: Incident) -> dict[str, Any]:
        """The newest firing's details, with what the chain adds: its firings, and auto-resolution."""
        details = dict(incident.details)
        if int(chain["k"]) > 1:
            details["cooldown"] = {"firings": int(chain["k"]), "last_firing": chain["last"]}
        if chain.get("auto"):
            details["auto_resolved"] = True
        return details


def _pointer() -> Entry:
    return {"chains": [], "gone": -(2**62), "pos": {}}


def _empty() -> Entry:
    return {"pos": {}}
