"""OPC UA Alarms & Conditions server: pq's operator alarms in the plant HMI's alarm summary.

Owns :class:`AlarmServer`, an asyncua server that mirrors the store's alerts as Part 9 conditions
and turns the HMI's Acknowledge / Confirm / AddComment / TimedShelve / OneShotShelve / Unshelve into
the same server-side actions the UI calls (:mod:`pq.alerts.actions`), with the OPC UA user as the
pq identity. The store stays the source of truth: every ``PQ_ALARMS_POLL_S`` the server reads the
open alerts (plus those it still shows), and an event fires for every condition whose view
(:mod:`connectors.opcua.alarm_mapping`) changed: raised, updated, acknowledged (here or in the UI),
confirmed, commented, shelved, unshelved, cleared. ConditionRefresh re-sends the retained ones.

Address space (namespace ``urn:pq:alarms``)::

    Objects/pq Alarms/<line_id>                 one object per line (the conditions' SourceNode)
        OpenAlarms, UnacknowledgedAlarms, HighestSeverity, LatestMessage   variables for data-only clients
        alert:<uuid>        PqAlarmType         the condition (ConditionId); its state travels in events
            alert:<uuid>/ShelvingState          ShelvedStateMachineType: target of the shelving methods

Events are emitted by the Server object (``i=2253``), where A&C clients subscribe. ``PqAlarmType``
is an ``OffNormalAlarmType`` with the pq fields AlertId, LineId, Cause, Serial, RecommendedAction,
Station, Score, RepeatCount and PqState.

Identity: OPC UA users are pq users (``pq users add``), checked with :func:`pq.auth.users.authenticate`
(same lockout and audit as the UI login). Anonymous sessions, when allowed, may browse, subscribe and
refresh, never act: every state-changing method checks the caller's pq role (operator or above) and
answers BadUserAccessDenied otherwise. Passwords are never logged. Secure channels: Basic256Sha256 and
Aes256_Sha256_RsaPss with SignAndEncrypt (plus None unless refused); the server certificate is created on
first start in the PKI directory, and an HMI's certificate must be in ``PKI/alarm-clients/trusted``
(a refused one is saved to ``PKI/alarm-clients/rejected`` for the integrator to move).

Must not import ui, models or simulators.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.common.event_objects import OffNormalAlarm
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from connectors.opcua.alarm_mapping import (
    EXPOSED_STATES, SHELVING_SUFFIX, ConditionView, alert_id_from_node_name, condition_node_name, condition_view,
)
from connectors.opcua.security import TrustList, fingerprint
from pq.alerts import actions
from pq.auth import audit
from pq.auth.roles import Actor, allows
from pq.auth.users import authenticate
from pq.errors import InvalidRequest, LoginRefused, PermissionDenied, PQError
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["AlarmServer", "ensure_server_certificate", "NAMESPACE_URI", "APPLICATION_URI_PREFIX"]

logger = logging.getLogger(__name__)

NAMESPACE_URI = "urn:pq:alarms"
APPLICATION_URI_PREFIX = "urn:pq:alarms:"
CERT_FILE, KEY_FILE = "alarm_server_cert.der", "alarm_server_key.pem"
CLIENTS_DIR = "alarm-clients"  # PKI/alarm-clients/trusted/*.der: HMI certificates accepted; .../rejected/ the others

_P = ua.SecurityPolicyType
_SECURE_POLICIES = [_P.Basic256Sha256_SignAndEncrypt, _P.Aes256Sha256RsaPss_SignAndEncrypt]
_ROLE = "operator"
_KEEP_CLOSED = 1000        # cleared conditions kept so a late Acknowledge gets the Part 9 answer
_KEEP_EVENT_IDS = 50       # EventIds remembered per condition
# alert_events written by people (the edge writes raised / updated / cleared / suppressed as 'edge')
_OPERATOR_EVENTS = ("acknowledged", "shelved", "unshelved", "feedback", "comment", "confirmed")
# A comment also becomes part of a shelve reason ("shelved from the HMI (opcua:<address>): <comment>"),
# whose limit is the smaller one.
_COMMENT_MAX = min(actions.COMMENT_MAX_CHARS, actions.REASON_MAX_CHARS - 80)
_SUMMARY = (("OpenAlarms", ua.VariantType.Int32), ("UnacknowledgedAlarms", ua.VariantType.Int32),
            ("HighestSeverity", ua.VariantType.UInt16), ("LatestMessage", ua.VariantType.String))

_S = ua.StatusCodes
_O = ua.ObjectIds

# The session whose Call request is being served: set around InternalSession.call (same task), read by
# the method callbacks, which asyncua calls with the object id and arguments only.
_CALLER: ContextVar[InternalSession | None] = ContextVar("pq_alarms_caller", default=None)


class _CallerSession(InternalSession):
    async def call(self, params):  # noqa: ANN001 - asyncua signature
        token = _CALLER.set(self)
        try:
            return await super().call(params)
        finally:
            _CALLER.reset(token)


class _InternalServer(InternalServer):
    def create_session(self, name, user=User(role=UserRole.Anonymous), external=False):  # noqa: ANN001
        return _CallerSession(self, self.aspace, self.subscription_service, name, user=user, external=external)


@dataclass
class _PqUser(User):
    pq_role: str | None = None


class _ReadOnlyRuleset(PermissionRuleset):
    """Every session may read, browse, subscribe and call (methods check roles themselves); nobody writes
    attributes or edits the address space."""

    _ALLOWED = frozenset(ua.NodeId(i) for i in USER_TYPES if i != _O.WriteRequest_Encoding_DefaultBinary)

    def check_validity(self, user, action_type_id, body):  # noqa: ANN001 - asyncua signature
        return action_type_id in self._ALLOWED


class _UserManager:
    """OPC UA user tokens -> pq users. Anonymous gets a role-less user when allowed, else is refused."""

    def __init__(self, owner: "AlarmServer"):
        self._owner = owner

    def get_user(self, iserver, username=None, password=None, certificate=None):  # noqa: ANN001
        if username is None:
            if self._owner.allow_anonymous:
                return User(role=UserRole.Anonymous)
            logger.info("anonymous OPC UA session refused (anonymous access is off)")
            return None
        store = self._owner.store
        if store is None:
            logger.warning("OPC UA login of %r refused: the store is not reachable yet", username)
            return None
        try:
            # Blocking (password hash + two small queries) inside the event loop: logins are rare.
            user = authenticate(store, username, password or "", client="opcua")
        except LoginRefused as exc:
            logger.info("OPC UA login refused for %r: %s", username, exc)
            return None
        except (PQError, SQLAlchemyError) as exc:
            logger.warning("OPC UA login of %r refused: store error %s", username, type(exc).__name__)
            return None
        return _PqUser(role=UserRole.User, name=user.username, pq_role=user.role)


@dataclass
class _Condition:
    view: ConditionView
    node: ua.NodeId
    event_ids: "OrderedDict[bytes, None]" = field(default_factory=OrderedDict)


async def ensure_server_certificate(pki_dir: Path, host: str | None = None) -> tuple[Path, Path]:
    """Create the server's self-signed certificate (DER) and key (PEM, mode 600) in ``pki_dir`` unless present."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    host = host or socket.gethostname()
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert, key = pki_dir / CERT_FILE, pki_dir / KEY_FILE
    fresh = not cert.exists()
    old_umask = os.umask(0o077)
    try:
        await setup_self_signed_certificate(
            key, cert, APPLICATION_URI_PREFIX + host, host,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"organizationName": "pq", "commonName": "pq alarms"})
    finally:
        os.umask(old_umask)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)  # public: the integrator copies it into the HMI's trust list
    if fresh:
        logger.info("created the A&C server certificate %s", cert)
    return cert, key


class AlarmServer:
    """Serve the store's alerts as OPC UA conditions until :meth:`stop`.

    ``store`` may be None at start (database down): the server answers browse requests and mirrors
    alerts once :meth:`set_store` hands it a store (the CLI's :class:`~pq.storage.opener.StoreOpener`).

    Example::

        async with AlarmServer(store, endpoint="opc.tcp://0.0.0.0:4850", pki_dir=Path("var/pki")):
            await stop_requested.wait()
    """

    def __init__(self, store: Store | None, *, endpoint: str, pki_dir: Path, poll_s: float = 1.0,
                 allow_anonymous: bool = True, allow_none_policy: bool = True, trust_unknown_clients: bool = False,
                 max_shelve_s: float | None = None):
        self.store = store
        self.endpoint = endpoint
        self.pki_dir = Path(pki_dir)
        self.poll_s = poll_s
        self.allow_anonymous = allow_anonymous
        self.allow_none_policy = allow_none_policy
        self.trust_unknown_clients = trust_unknown_clients
        self.client_trust = TrustList(self.pki_dir / CLIENTS_DIR / "trusted", self.pki_dir / CLIENTS_DIR / "rejected")
        self._max_shelve_s = max_shelve_s
        self.server: Server | None = None
        self.certificate_path: Path | None = None
        self._idx = 0
        self._root: Any = None
        self._type_id: ua.NodeId | None = None
        self._lines: dict[str, ua.NodeId] = {}
        self._summaries: dict[str, dict] = {}
        self._open: dict[str, _Condition] = {}
        self._closed: "OrderedDict[str, _Condition]" = OrderedDict()
        self._lock = asyncio.Lock()
        self._poll_task: asyncio.Task | None = None
        self._store_down = False
        self.events_sent = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def set_store(self, store: Store) -> None:
        self.store = store

    @property
    def max_shelve_s(self) -> float:
        if self._max_shelve_s is not None:
            return self._max_shelve_s
        return self.store.settings.ui_shelve_max_h * 3600.0 if self.store is not None else 8 * 3600.0

    async def start(self) -> None:
        host = urlparse(self.endpoint).hostname or "0.0.0.0"
        cert_host = socket.gethostname() if host in ("0.0.0.0", "::") else host
        server = Server(iserver=_InternalServer(user_manager=_UserManager(self)))
        server.iserver.bind_condition_methods = True  # ConditionRefresh / ConditionRefresh2
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("pq alarms")
        await server.set_application_uri(APPLICATION_URI_PREFIX + cert_host)
        cert, key = await ensure_server_certificate(self.pki_dir, cert_host)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        self.certificate_path = cert
        policies = ([_P.NoSecurity] if self.allow_none_policy else []) + _SECURE_POLICIES
        server.set_security_policy(policies, permission_ruleset=_ReadOnlyRuleset())
        tokens = [ua.UserNameIdentityToken] + ([ua.AnonymousIdentityToken] if self.allow_anonymous else [])
        server.set_identity_tokens(tokens)
        server.set_certificate_validator(self._validate_client_certificate)

        self._idx = await server.register_namespace(NAMESPACE_URI)
        self._root = await server.nodes.objects.add_folder(ua.NodeId("pq Alarms", self._idx),
                                                          ua.QualifiedName("pq Alarms", self._idx))
        alarm_type = await server.create_custom_event_type(self._idx, "PqAlarmType", _O.OffNormalAlarmType, [
            ("AlertId", ua.VariantType.String), ("LineId", ua.VariantType.String), ("Cause", ua.VariantType.String),
            ("Serial", ua.VariantType.String), ("RecommendedAction", ua.VariantType.String),
            ("Station", ua.VariantType.String), ("Score", ua.VariantType.Double),
            ("RepeatCount", ua.VariantType.Int32), ("PqState", ua.VariantType.String),
        ])
        self._type_id = alarm_type.nodeid
        self._link_methods(server)
        self.server = server
        await server.start()
        logger.info("A&C server on %s (policies: %s; anonymous %s), certificate %s", self.endpoint,
                    ", ".join(p.name for p in policies), "may browse" if self.allow_anonymous else "refused", cert)
        self._poll_task = asyncio.create_task(self._poll_loop(), name="pq-alarms-poll")

    async def _validate_client_certificate(self, cert, app: ua.ApplicationDescription) -> None:
        """A secure session is accepted only from an HMI whose certificate is in the trust list (or trusted on
        first use when allowed); a refused one is saved under ``alarm-clients/rejected`` to be moved by hand."""
        if self.client_trust.is_trusted(cert):
            return
        subject = cert.subject.rfc4514_string()
        if self.trust_unknown_clients:
            path = self.client_trust.add(cert)
            logger.warning("OPC UA client %s (%s, SHA-256 %s) trusted on first use, saved to %s", app.ApplicationUri,
                           subject, fingerprint(cert), path)
            return
        path = self.client_trust.reject(cert)
        logger.warning("OPC UA client %s refused: certificate %s (SHA-256 %s) is not trusted; to accept it, move %s "
                       "into %s", app.ApplicationUri, subject, fingerprint(cert), path, self.client_trust.directory)
        raise ServiceError(_S.BadSecurityChecksFailed)

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            try:
                await self._poll_task
            except asyncio.CancelledError:
                pass
            self._poll_task = None
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> "AlarmServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- mirroring the store ---------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug must not stop the mirroring for good: reported with its traceback, retried
                logger.exception("A&C server: refresh failed; retrying in %.1f s", self.poll_s)
            await asyncio.sleep(self.poll_s)

    async def refresh(self) -> int:
        """Read the store once and send an event for every condition that changed; returns how many."""
        store = self.store
        if store is None or self.server is None:
            return 0
        # One refresh at a time, read and apply together: a slower read applied after a newer one would
        # send clients an older state (an acknowledgement flickering back to unacknowledged).
        async with self._lock:
            try:
                rows, extras = await asyncio.to_thread(_read_alerts, store, list(self._open))
            except (PQError, SQLAlchemyError) as exc:
                if not self._store_down:
                    logger.warning("A&C server: store not reachable (%s); clients keep the last state, retrying "
                                   "every %.1f s", type(exc).__name__, self.poll_s)
                    self._store_down = True
                return 0
            if self._store_down:
                logger.info("A&C server: store reachable again")
                self._store_down = False
            sent = 0
            seen = set()
            for row in rows:
                seen.add(row["id"])
                confirmed, comment, actor = extras.get(row["id"], (False, None, None))
                sent += await self._apply(condition_view(row, confirmed=confirmed, comment=comment, last_actor=actor))
            for alert_id in [a for a in self._open if a not in seen]:
                # Gone from the exposed states (e.g. deleted by retention): close it for the clients.
                gone = self._open[alert_id].view
                sent += await self._apply(replace(gone, active=False, retain=False, state="cleared",
                                                  changed_at=datetime.now(timezone.utc)))
            await self._write_summaries()
        return sent

    async def _apply(self, view: ConditionView) -> int:
        cond = self._open.get(view.alert_id)
        if cond is None:
            if not view.retain:
                return 0  # raised and cleared between two polls, or already closed
            cond = _Condition(view, await self._add_condition_nodes(view))
            self._open[view.alert_id] = cond
        elif cond.view == view:
            return 0
        cond.view = view
        await self._emit(cond)
        if not view.retain:
            del self._open[view.alert_id]
            self._closed[view.alert_id] = cond
            while len(self._closed) > _KEEP_CLOSED:
                _, old = self._closed.popitem(last=False)
                await self.server.delete_nodes([self.server.get_node(old.node)], recursive=True)
        return 1

    async def _line_node(self, line_id: str) -> ua.NodeId:
        if line_id not in self._lines:
            obj = await self._root.add_object(ua.NodeId(f"line:{line_id}", self._idx),
                                             ua.QualifiedName(line_id, self._idx))
            await obj.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
            for name, vtype in _SUMMARY:
                await obj.add_variable(ua.NodeId(f"line:{line_id}/{name}", self._idx), ua.QualifiedName(name, self._idx),
                                       ua.get_default_value(vtype), varianttype=vtype)
            self._lines[line_id] = obj.nodeid
        return self._lines[line_id]

    async def _write_summaries(self) -> None:
        """Per-line variables for clients that read data but not A&C events (e.g. an HMI tag alarm on
        UnacknowledgedAlarms > 0): written only when they change."""
        for line_id in self._lines:
            views = [c.view for c in self._open.values() if c.view.line_id == line_id]
            calling = [v for v in views if not v.acked and not v.shelved]
            latest = max(views, key=lambda v: v.changed_at, default=None)
            values = {"OpenAlarms": len(views), "UnacknowledgedAlarms": len(calling),
                      "HighestSeverity": max((v.severity for v in calling), default=0),
                      "LatestMessage": latest.title if latest else ""}
            if self._summaries.get(line_id) == values:
                continue
            self._summaries[line_id] = values
            for name, vtype in _SUMMARY:
                node = self.server.get_node(ua.NodeId(f"line:{line_id}/{name}", self._idx))
                await node.write_value(ua.Variant(values[name], vtype))

    async def _add_condition_nodes(self, view: ConditionView) -> ua.NodeId:
        """A bare condition node (and its ShelvingState) so Call requests can name it; no state variables:
        Part 9 lets a condition's state travel in its events only, and these would go stale between polls."""
        parent = await self._line_node(view.line_id)
        name = condition_node_name(view.alert_id)
        node = ua.NodeId(name, self._idx)
        items = [_object_item(node, parent, f"{view.cause} ({view.alert_id[:8]})", self._idx, self._type_id),
                 _object_item(ua.NodeId(name + SHELVING_SUFFIX, self._idx), node, "ShelvingState", 0,
                              ua.NodeId(_O.ShelvedStateMachineType))]
        for result in await self.server.iserver.isession.add_nodes(items):
            result.StatusCode.check()
        return node

    async def _emit(self, cond: _Condition) -> None:
        ev = self._event(cond.view, cond.node)
        cond.event_ids[ev.EventId] = None
        while len(cond.event_ids) > _KEEP_EVENT_IDS:
            cond.event_ids.popitem(last=False)
        await self.server.iserver.subscription_service.trigger_event(ev)
        self.events_sent += 1
        logger.debug("event for alert %s: %s acked=%s shelved=%s retain=%s", cond.view.alert_id,
                     cond.view.state, cond.view.acked, cond.view.shelved, cond.view.retain)

    def _event(self, v: ConditionView, node: ua.NodeId) -> OffNormalAlarm:
        now = datetime.now(timezone.utc)
        ev = OffNormalAlarm(sourcenode=self._lines[v.line_id], message=v.title, severity=v.severity)
        ev.EventType = self._type_id
        ev.emitting_node = ua.NodeId(_O.Server)
        T, LT, B, S, N, D = (ua.VariantType.DateTime, ua.VariantType.LocalizedText, ua.VariantType.Boolean,
                             ua.VariantType.String, ua.VariantType.NodeId, ua.VariantType.Double)

        def put(name: str, value: Any, vtype: ua.VariantType) -> None:
            ev.add_property(name, value, vtype)

        def two_state(name: str, value: bool, true_text: str, false_text: str, at: datetime | None) -> None:
            put(name, ua.LocalizedText(true_text if value else false_text), LT)
            put(f"{name}/Id", value, B)
            put(f"{name}/TrueState", ua.LocalizedText(true_text), LT)
            put(f"{name}/FalseState", ua.LocalizedText(false_text), LT)
            if at is not None:
                put(f"{name}/TransitionTime", at, T)

        put("EventId", uuid.uuid4().bytes, ua.VariantType.ByteString)
        put("NodeId", node, N)                      # the ConditionId
        put("SourceName", v.line_id, S)
        put("Time", v.changed_at, T)
        put("ReceiveTime", now, T)
        put("ConditionClassId", ua.NodeId(_O.ProcessConditionClassType), N)
        put("ConditionClassName", ua.LocalizedText("Process"), LT)
        put("ConditionName", v.cause, S)
        put("BranchId", ua.NodeId(), N)              # pq keeps no branches: the trunk only
        put("Retain", v.retain, B)
        two_state("EnabledState", True, "Enabled", "Disabled", None)
        put("Quality", ua.StatusCode(_S.Good), ua.VariantType.StatusCode)
        put("LastSeverity", v.severity, ua.VariantType.UInt16)
        put("Comment", ua.LocalizedText(v.comment or ""), LT)
        put("ClientUserId", v.client_user or "", S)
        two_state("ActiveState", v.active, "Active", "Inactive", v.raised_at if v.active else v.changed_at)
        two_state("AckedState", v.acked, "Acknowledged", "Unacknowledged", None)
        two_state("ConfirmedState", v.confirmed, "Confirmed", "Unconfirmed", None)
        two_state("SuppressedState", False, "Suppressed", "Unsuppressed", None)
        put("SuppressedOrShelved", v.shelved, B)
        put("MaxTimeShelved", self.max_shelve_s * 1000.0, D)
        shelf = "TimedShelved" if v.shelved else "Unshelved"
        put("ShelvingState/CurrentState", ua.LocalizedText(shelf), LT)
        put("ShelvingState/CurrentState/Id",
            ua.NodeId(_O.ShelvedStateMachineType_TimedShelved if v.shelved else _O.ShelvedStateMachineType_Unshelved), N)
        put("ShelvingState/UnshelveTime", v.unshelve_in_ms(now), D)
        put("NormalState", ua.NodeId(), N)
        for name, value, vtype in (("AlertId", v.alert_id, S), ("LineId", v.line_id, S), ("Cause", v.cause, S),
                                   ("Serial", v.serial, S), ("RecommendedAction", v.action, S),
                                   ("Station", v.station, S), ("Score", v.score, D),
                                   ("RepeatCount", v.repeat_count, ua.VariantType.Int32), ("PqState", v.state, S)):
            put(name, value, vtype)
        return ev

    # -- methods from the HMI --------------------------------------------------------------------
    def _link_methods(self, server: Server) -> None:
        table: dict[int, Callable] = {
            _O.AcknowledgeableConditionType_Acknowledge: self._m_acknowledge,
            _O.AcknowledgeableConditionType_Confirm: self._m_confirm,
            _O.ConditionType_AddComment: self._m_add_comment,
            _O.ShelvedStateMachineType_TimedShelve: self._m_timed_shelve,
            _O.ShelvedStateMachineType_OneShotShelve: self._m_one_shot_shelve,
            _O.ShelvedStateMachineType_Unshelve: self._m_unshelve,
            _O.AlarmConditionType_ShelvingState_TimedShelve: self._m_timed_shelve,
            _O.AlarmConditionType_ShelvingState_OneShotShelve: self._m_one_shot_shelve,
            _O.AlarmConditionType_ShelvingState_Unshelve: self._m_unshelve,
            # Part 9 1.05 variants that carry a comment
            _O.ShelvedStateMachineType_TimedShelve2: self._m_timed_shelve,
            _O.ShelvedStateMachineType_OneShotShelve2: self._m_one_shot_shelve,
            _O.ShelvedStateMachineType_Unshelve2: self._m_unshelve,
        }
        for method_id, callback in table.items():
            node = ua.NodeId(method_id)
            if node in server.iserver.aspace:
                server.link_method(server.get_node(node), callback)

    def _resolve(self, object_id: ua.NodeId) -> tuple[str | None, _Condition | None]:
        alert_id = alert_id_from_node_name(object_id.Identifier) if object_id.NamespaceIndex == self._idx else None
        if alert_id is None:
            return None, None
        return alert_id, self._open.get(alert_id) or self._closed.get(alert_id)

    def _caller(self) -> tuple[Actor | None, str]:
        session = _CALLER.get()
        peer = session.name if session is not None else None
        host = peer[0] if isinstance(peer, tuple) and peer else str(peer or "?")
        user = session.user if session is not None else None
        if isinstance(user, _PqUser) and user.name:
            return Actor(user.name, user.pq_role or "", client=f"opcua:{host}"), host
        return None, host

    def _guard(self, method: str, object_id: ua.NodeId, event_id: Any = None, comment: Any = None,
               ) -> tuple[ua.StatusCode | None, Actor | None, str | None, _Condition | None]:
        """The checks every method shares: the condition exists, the caller may act, the EventId is known,
        the comment fits (refused rather than cut: nothing the operator typed is dropped silently)."""
        alert_id, cond = self._resolve(object_id)
        if cond is None:
            return ua.StatusCode(_S.BadNodeIdUnknown), None, None, None
        if self.store is None:
            return ua.StatusCode(_S.BadResourceUnavailable), None, None, None
        actor, host = self._caller()
        if actor is None or not allows(actor.role, _ROLE):
            who = actor.username if actor else "anonymous"
            logger.info("OPC UA %s on alert %s refused for %s from %s: role %s or above is required",
                        method, alert_id, who, host, _ROLE)
            return ua.StatusCode(_S.BadUserAccessDenied), None, None, None
        if event_id is not None and bytes(event_id) not in cond.event_ids:
            return ua.StatusCode(_S.BadEventIdUnknown), actor, alert_id, cond
        if len(_text(comment) or "") > _COMMENT_MAX:
            logger.info("OPC UA %s on alert %s refused: comment longer than %d characters", method, alert_id,
                        _COMMENT_MAX)
            return ua.StatusCode(_S.BadInvalidArgument), actor, alert_id, cond
        return None, actor, alert_id, cond

    async def _finish(self, code: int | None) -> ua.StatusCode | list:
        await self.refresh()  # the client sees the new state now, not at the next poll
        return ua.StatusCode(code) if code is not None else []

    async def _m_acknowledge(self, object_id: ua.NodeId, event_id: Any = None, comment: Any = None):
        bad, actor, alert_id, cond = self._guard("Acknowledge", object_id, _value(event_id), comment)
        if bad is not None:
            return bad
        text = _text(comment)
        code = await asyncio.to_thread(_acknowledge, self.store, alert_id, actor, text)
        return await self._finish(code)

    async def _m_confirm(self, object_id: ua.NodeId, event_id: Any = None, comment: Any = None):
        bad, actor, alert_id, cond = self._guard("Confirm", object_id, _value(event_id), comment)
        if bad is not None:
            return bad
        if cond.view.confirmed:
            return ua.StatusCode(_S.BadConditionBranchAlreadyConfirmed)
        if not cond.view.acked or not cond.view.retain:
            # Part 9: confirmation follows acknowledgement; an unacknowledged or cleared alarm has none to confirm.
            return ua.StatusCode(_S.BadInvalidState)
        code = await asyncio.to_thread(_note, self.store, alert_id, actor, "confirmed", _text(comment))
        return await self._finish(code)

    async def _m_add_comment(self, object_id: ua.NodeId, event_id: Any = None, comment: Any = None):
        bad, actor, alert_id, cond = self._guard("AddComment", object_id, _value(event_id), comment)
        if bad is not None:
            return bad
        text = _text(comment)
        if not text:
            return ua.StatusCode(_S.BadInvalidArgument)
        code = await asyncio.to_thread(_note, self.store, alert_id, actor, "comment", text)
        return await self._finish(code)

    async def _m_timed_shelve(self, object_id: ua.NodeId, shelving_time: Any = None, comment: Any = None):
        bad, actor, alert_id, cond = self._guard("TimedShelve", object_id, comment=comment)
        if bad is not None:
            return bad
        try:
            duration_s = float(_value(shelving_time)) / 1000.0  # Part 9: ShelvingTime is a Duration in ms
        except (TypeError, ValueError):
            return ua.StatusCode(_S.BadInvalidArgument)
        code = await asyncio.to_thread(_shelve, self.store, alert_id, actor, duration_s, _text(comment))
        return await self._finish(code)

    async def _m_one_shot_shelve(self, object_id: ua.NodeId, comment: Any = None):
        # pq has no "until it returns to normal" shelve: a one-shot shelve lasts the longest timed shelve;
        # when pq clears the alert meanwhile the condition leaves the summary anyway.
        bad, actor, alert_id, cond = self._guard("OneShotShelve", object_id, comment=comment)
        if bad is not None:
            return bad
        code = await asyncio.to_thread(_shelve, self.store, alert_id, actor, self.max_shelve_s, _text(comment))
        return await self._finish(code)

    async def _m_unshelve(self, object_id: ua.NodeId, comment: Any = None):
        bad, actor, alert_id, cond = self._guard("Unshelve", object_id, comment=comment)
        if bad is not None:
            return bad
        code = await asyncio.to_thread(_unshelve, self.store, alert_id, actor, _text(comment))
        return await self._finish(code)


# -- helpers (the blocking ones run in a worker thread) --------------------------------------------

def _object_item(node: ua.NodeId, parent: ua.NodeId, name: str, ns: int, type_id: ua.NodeId) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.EventNotifier = 0
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node
    item.BrowseName = ua.QualifiedName(name, ns)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(_O.HasComponent)
    item.TypeDefinition = type_id
    item.NodeAttributes = attrs
    return item


def _value(arg: Any) -> Any:
    return arg.Value if isinstance(arg, ua.Variant) else arg


def _text(comment: Any) -> str | None:
    value = _value(comment)
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    return ((value or "").strip() if isinstance(value, str) else "") or None


def _read_alerts(store: Store, shown: list[str]) -> tuple[list[dict], dict[str, tuple[bool, str | None, str | None]]]:
    """Open alerts plus the ones clients still show (to see them clear), and per alert whether it was
    confirmed, its latest comment and who made the latest operator change."""
    a, e = schema.alerts.c, schema.alert_events.c
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            select(schema.alerts).where(a.state.in_(("active", "acknowledged", "shelved"))))]
        have = {r["id"] for r in rows}
        missing = [i for i in shown if i not in have]
        for start in range(0, len(missing), 500):
            rows += [dict(r._mapping) for r in conn.execute(
                select(schema.alerts).where(a.id.in_(missing[start:start + 500]), a.state.in_(EXPOSED_STATES)))]
        extras: dict[str, tuple[bool, str | None, str | None]] = {}
        ids = [r["id"] for r in rows]
        for start in range(0, len(ids), 500):
            for r in conn.execute(select(e.alert_id, e.event, e.detail, e.username).where(
                    e.alert_id.in_(ids[start:start + 500]), e.event.in_(_OPERATOR_EVENTS)).order_by(e.at)):
                confirmed, comment, _ = extras.get(r.alert_id, (False, None, None))
                if r.event in ("comment", "confirmed"):
                    comment = (r.detail or {}).get("comment") or comment
                extras[r.alert_id] = (confirmed or r.event == "confirmed", comment, r.username)
    return rows, extras


def _state(store: Store, alert_id: str) -> dict | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).first()
    return dict(row._mapping) if row else None


def _refused(store: Store, alert_id: str, actor: Actor, action: str, reason: str) -> None:
    """Audit an HMI action that changed nothing (a conflicting acknowledge, a cleared alert)."""
    with store.engine.begin() as conn:
        audit.record(conn, username=actor.username, action=f"alert.{action}_refused", target=f"alert:{alert_id}",
                     detail={"reason": reason, "via": "opcua"}, client=actor.client)
    logger.info("OPC UA %s of alert %s by %s changed nothing: %s", action, alert_id, actor.username, reason)


def _note(store: Store, alert_id: str, actor: Actor, event: str, comment: str | None) -> int | None:
    """Append an alert_events row ('comment' or 'confirmed') and its audit row in one transaction."""
    at = datetime.now(timezone.utc)
    try:
        with store.engine.begin() as conn:
            row = conn.execute(select(schema.alerts.c.line_id, schema.alerts.c.serial, schema.alerts.c.cause)
                               .where(schema.alerts.c.id == alert_id)).first()
            if row is None:
                return _S.BadNodeIdUnknown
            detail = {"comment": comment, "via": "opcua"}
            conn.execute(schema.alert_events.insert().values(
                id=str(uuid.uuid4()), alert_id=alert_id, event=event, at=at, username=actor.username, detail=detail))
            audit.record(conn, username=actor.username, action=f"alert.{event}", target=f"alert:{alert_id}",
                         detail={"line_id": row.line_id, "serial": row.serial, "cause": row.cause} | detail,
                         client=actor.client, at=at)
    except (PQError, SQLAlchemyError) as exc:
        logger.warning("OPC UA %s on alert %s not stored: %s", event, alert_id, type(exc).__name__)
        return _S.BadResourceUnavailable
    return None


def _guarded(fn: Callable[[], int | None], what: str, alert_id: str) -> int | None:
    try:
        return fn()
    except PermissionDenied:
        return _S.BadUserAccessDenied
    except InvalidRequest as exc:
        logger.info("OPC UA %s on alert %s refused: %s", what, alert_id, exc)
        return _S.BadInvalidArgument
    except (PQError, SQLAlchemyError) as exc:
        logger.warning("OPC UA %s on alert %s failed: the store answered %s", what, alert_id, type(exc).__name__)
        return _S.BadResourceUnavailable


def _acknowledge(store: Store, alert_id: str, actor: Actor, comment: str | None) -> int | None:
    def run() -> int | None:
        row = _state(store, alert_id)
        if row is None:
            return _S.BadNodeIdUnknown
        if row["state"] == "cleared":
            # Part 9 §5.7.3: Bad_ConditionBranchAlreadyAcked = "the EventId does not refer to a state that
            # needs acknowledgement". pq's cleared is final (the condition left the summary with Retain
            # false), so nothing about it awaits an acknowledgement. Bad_EventIdUnknown would be wrong (we
            # know the event) and Bad_ConditionAlreadyDisabled is for Disable, which pq does not offer.
            _refused(store, alert_id, actor, "acknowledge", "already cleared by pq")
            return _S.BadConditionBranchAlreadyAcked
        result = actions.acknowledge(store, alert_id, actor=actor)
        if not result.changed:
            # Conflicting acknowledgements: the first one (UI or HMI) won; this one is audited and answered
            # with the Part 9 code for an acknowledged branch. The client sees AckedState true in the event.
            _refused(store, alert_id, actor, "acknowledge", result.message)
            return _S.BadConditionBranchAlreadyAcked
        if comment:
            return _note(store, alert_id, actor, "comment", comment)
        return None

    return _guarded(run, "Acknowledge", alert_id)


def _shelve(store: Store, alert_id: str, actor: Actor, duration_s: float, comment: str | None) -> int | None:
    reason = f"shelved from the HMI ({actor.client})" + (f": {comment}" if comment else "")

    def run() -> int | None:
        try:
            result = actions.shelve(store, alert_id, actor=actor, reason=reason,
                                    duration_s=duration_s)
        except InvalidRequest as exc:  # the reason is ours, so it is the duration (60 s .. PQ_UI_SHELVE_MAX_H)
            logger.info("OPC UA TimedShelve on alert %s refused: %s", alert_id, exc)
            return _S.BadShelvingTimeOutOfRange
        if not result.changed:
            return _S.BadConditionAlreadyShelved if result.state == "shelved" else _S.BadInvalidState
        return None

    return _guarded(run, "TimedShelve", alert_id)


def _unshelve(store: Store, alert_id: str, actor: Actor, comment: str | None) -> int | None:
    def run() -> int | None:
        result = actions.unshelve(store, alert_id, actor=actor)
        if not result.changed:
            return _S.BadConditionNotShelved
        if comment:
            return _note(store, alert_id, actor, "comment", comment)
        return None

    return _guarded(run, "Unshelve", alert_id)
