"""The server's no-copy write path: a value goes into asyncua's address space and the queues of the
monitored items that watch it without the deep copy asyncua makes of every value (the server's
``naive`` write mode, ``Node.write_value`` per value, is the benchmark's baseline for it).

Owns the reliance on asyncua 2.x internals (``MonitoredItemService``, ``MonitoredItemValues``, a
subscription's ``_triggered_datachanges``); :func:`fast_path_available` checks them once so that the
server falls back to ``write_attribute_value`` if they change. Imports nothing of ``pq``.

Example::

    if fast_path_available():
        fast_write(attval, ua.DataValue(ua.Variant(1.5, ua.VariantType.Double)))
"""

from __future__ import annotations

import asyncio

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues

_DISABLED = ua.MonitoringMode.Disabled


def fast_path_available() -> bool:
    """The no-copy write path relies on asyncua 2.x internals; verify them once."""
    mv = MonitoredItemValues()
    return (
        hasattr(mv, "current_dvalue")
        and hasattr(mv, "old_dvalue")
        and hasattr(MonitoredItemService, "datachange_callback")
        and hasattr(MonitoredItemService, "_is_data_changed")
    )


def fast_write(attval, dv: ua.DataValue) -> None:
    """Store ``dv`` and queue it for every monitored item, without asyncua's per-item deep copy.

    Our DataValues are fresh objects that are never mutated after this call, so the copy that
    MonitoredItemValues.set_current_datavalue makes to protect against aliasing is not needed.
    """
    attval.value = dv
    cbs = attval.datachange_callbacks
    if not cbs:
        return
    for handle, cb in list(cbs.items()):
        svc = getattr(cb, "__self__", None)
        if not isinstance(svc, MonitoredItemService):
            asyncio.ensure_future(cb(handle, dv))
            continue
        mid = svc._monitored_datachange.get(handle)
        mdata = svc._monitored_items.get(mid) if mid is not None else None
        if mdata is None or mdata.mode == _DISABLED:
            continue
        mv = mdata.mvalue
        old = mv.current_dvalue
        mv.old_dvalue = old
        mv.current_dvalue = dv
        flt = mdata.filter
        if flt:
            ok = svc._is_data_changed(mv, flt.Trigger) and svc._is_deadband_exceeded(mv, flt)
        else:
            ok = old is None or old.StatusCode != dv.StatusCode or old.Value != dv.Value
        if not ok:
            continue
        isub = svc.isub
        queue = isub._triggered_datachanges
        ev = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=dv)
        lst = queue.get(mid)
        if lst is None:
            queue[mid] = [ev]
            if isub._task is None and isub.data.RevisedPublishingInterval <= 0.0:
                asyncio.ensure_future(isub._trigger_publish())
        else:
            size = mdata.queue_size
            if size and len(lst) >= size:
                del lst[0]
            lst.append(ev)
