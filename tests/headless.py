"""Run a notebook headless with nbclient, with a kernel client that cannot sleep through a reply.

pyzmq's asyncio poll waits on a ZMQ socket's edge-triggered file descriptor, and once in a while the edge is missed:
a lesson's last reply sat unread in the client's socket until the cell's 600 s timeout (CI: 616 s for one lesson
pair; reproduced here, with the kernel idle and all cells run, and ended by reading the socket's EVENTS). A poll
that times out checks the socket with zmq_poll, which is level-triggered, so polling in short slices bounds such a
stall to one slice.
"""
from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from nbclient import NotebookClient
from traitlets import Type

SLICE_S = 0.5


class SlicedPollChannel(AsyncZMQSocketChannel):
    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE_S if deadline is None else min(SLICE_S, max(0.0, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class SlicedPollKernelClient(AsyncKernelClient):
    shell_channel_class = Type(SlicedPollChannel)
    iopub_channel_class = Type(SlicedPollChannel)
    stdin_channel_class = Type(SlicedPollChannel)
    control_channel_class = Type(SlicedPollChannel)


def run_notebook(nb, cwd, *, timeout: int = 600, allow_errors: bool = False):
    """Execute `nb` (an nbformat node) in place, in a fresh python3 kernel started in `cwd`; returns it."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})
    client.km = client.create_kernel_manager()
    client.km.client_class = f"{__name__}.{SlicedPollKernelClient.__name__}"
    client.execute()
    return nb
