"""The headless runner's kernel channel: it polls in slices, yet delivers every message and honours timeouts."""
import asyncio
import time
from queue import Empty

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from headless import SLICE_S, SlicedPollChannel


async def _pair():
    ctx = zmq.asyncio.Context.instance()
    ours, theirs = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    port = ours.bind_to_random_port("tcp://127.0.0.1")
    theirs.connect(f"tcp://127.0.0.1:{port}")
    session = Session(key=b"")
    return SlicedPollChannel(ours, session), theirs, session


def test_a_message_that_arrives_after_several_slices_is_delivered_and_a_timeout_raises_empty():
    async def scenario():
        channel, kernel, session = await _pair()
        t0 = time.monotonic()
        with pytest.raises(Empty):
            await channel.get_msg(timeout=1.2)
        waited = time.monotonic() - t0
        assert 1.2 <= waited < 1.2 + SLICE_S, waited

        async def reply_later():
            await asyncio.sleep(3 * SLICE_S + 0.2)
            session.send(kernel, "execute_reply", {"status": "ok"})

        sender = asyncio.ensure_future(reply_later())
        msg = await channel.get_msg(timeout=None)  # no deadline: slices until the message comes
        await sender
        assert msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
        session.send(kernel, "status", {"execution_state": "idle"})
        await asyncio.sleep(0.2)
        queued = await channel.get_msg(timeout=0)  # already queued: delivered at once, even with no time left
        assert queued["content"] == {"execution_state": "idle"}
        channel.close()
        kernel.close(linger=0)

    asyncio.run(scenario())
