"""The asyncio publisher against the real RabbitMQ: what it sends, that confirms are awaited, and
that every failure (closed port, silent peer, killed connection, nack, unroutable, closed
publisher) is a QueueUnavailable in bounded time, after which the next publish works again."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import pika
import pytest
from dramatiq import Message, Middleware, Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from actors.job_queue import DramatiqJobQueue
from actors.publisher import Publisher
from service.errors import QueueUnavailable
from tests.conftest import RABBITMQ_URL, delete_queues
from tests.faults.proxy import FaultProxy

TIMEOUT = 5.0


class Recorder(Middleware):
    """Records the enqueue hooks, as RabbitmqBroker.enqueue emits them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None]] = []

    def before_enqueue(self, broker: Any, message: Message[Any], delay: int | None) -> None:
        self.calls.append(("before", message.message_id, delay))

    def after_enqueue(self, broker: Any, message: Message[Any], delay: int | None) -> None:
        self.calls.append(("after", message.message_id, delay))


@dataclass
class Rabbit:
    queue: str
    broker: RabbitmqBroker
    actor: Any
    recorder: Recorder
    connection_name: str
    ran: list[str] = field(default_factory=list)
    ran_event: threading.Event = field(default_factory=threading.Event)

    def publisher(self, url: str = RABBITMQ_URL, timeout: float = TIMEOUT) -> Publisher:
        return Publisher(self.broker, url, timeout=timeout, connection_name=self.connection_name)


@pytest.fixture
def rabbit() -> Iterator[Rabbit]:
    name = f"publisher-test-{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(url=RABBITMQ_URL, confirm_delivery=True)
    recorder = Recorder()
    broker.add_middleware(recorder)
    ran: list[str] = []
    ran_event = threading.Event()

    @dramatiq.actor(broker=broker, queue_name=name, actor_name="run_export")
    def run_export(job_id: str) -> None:
        ran.append(job_id)
        ran_event.set()

    try:
        yield Rabbit(name, broker, run_export, recorder, f"{name}-connection", ran, ran_event)
    finally:
        broker.close()
        delete_queues(name)


@pytest.fixture
async def publisher(rabbit: Rabbit) -> AsyncIterator[Publisher]:
    publisher = rabbit.publisher()
    yield publisher
    await publisher.close()


def drain(queue: str) -> list[tuple[Any, Any, bytes]]:
    """Every message in ``queue`` (method, properties, body), removed from it."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        got: list[tuple[Any, Any, bytes]] = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((method, properties, body))
    finally:
        connection.close()


def queue_lengths(queue: str) -> tuple[int, int, int]:
    """Messages in the queue, its .DQ and its .XQ, declared with Dramatiq's own arguments (so a
    queue declared with other arguments fails here with PRECONDITION_FAILED)."""
    broker = RabbitmqBroker(url=RABBITMQ_URL)
    try:
        counts: tuple[int, int, int] = broker.get_queue_message_counts(queue)
        return counts
    finally:
        broker.close()


def queue_exists(queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    finally:
        if connection.is_open:
            connection.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def url_to(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def close_connection_named(name: str) -> None:
    """Close, from the broker's side, the one connection whose client called itself ``name``."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"{name}"' in line]
    assert len(pids) == 1, listing
    await rabbitmqctl("close_connection", pids[0], "killed by test_publisher")


def comparable(message: Message[Any]) -> dict[str, Any]:
    return {**message.asdict(), "message_id": None, "message_timestamp": None}


async def fails_at_once(publisher: Publisher, message: Message[Any], match: str | None = None) -> None:
    """The publish fails with QueueUnavailable well before a TIMEOUT-second publisher's timeout:
    the failure was noticed, not waited out (the bound leaves room for a loaded machine)."""
    began = time.monotonic()
    with pytest.raises(QueueUnavailable, match=match):
        await publisher.publish(message)
    assert time.monotonic() - began < TIMEOUT / 2


# What is sent -------------------------------------------------------------------------------


async def test_the_message_is_the_one_actor_send_would_publish(rabbit: Rabbit, publisher: Publisher) -> None:
    job_id = str(uuid.uuid4())
    message = rabbit.actor.message(job_id)
    await publisher.publish(message)
    # The publisher declared the queue, its .DQ and its .XQ, with Dramatiq's arguments
    assert all(queue_exists(q) for q in (rabbit.queue, f"{rabbit.queue}.DQ", f"{rabbit.queue}.XQ"))
    assert queue_lengths(rabbit.queue) == (1, 0, 0)
    # and ran the broker's enqueue hooks around the publish, as enqueue does (no delay)
    assert rabbit.recorder.calls == [
        ("before", message.message_id, None),
        ("after", message.message_id, None),
    ]

    await asyncio.to_thread(rabbit.actor.send, job_id)  # Dramatiq's own path, for comparison
    (ours_method, ours_props, ours_body), (send_method, send_props, send_body) = drain(rabbit.queue)

    ours, sent = Message.decode(ours_body), Message.decode(send_body)
    assert ours.message_id == message.message_id
    assert ours.args == (job_id,)
    assert comparable(ours) == comparable(sent)
    # Byte for byte, but for the id and the timestamp
    assert (
        ours_body == sent.copy(message_id=ours.message_id, message_timestamp=ours.message_timestamp).encode()
    )
    assert (ours_method.exchange, ours_method.routing_key) == (send_method.exchange, send_method.routing_key)
    assert ours_method.routing_key == rabbit.queue
    # The same properties, but for what aio-pika always writes, none of which a worker reads: the
    # AMQP message_id (Dramatiq's own id), priority 0 (RabbitMQ's reading of none) and no headers
    written = {"message_id": message.message_id, "priority": 0, "headers": {}}
    assert {**vars(send_props), **written} == vars(ours_props)
    assert ours_props.delivery_mode == send_props.delivery_mode == 2


async def test_a_dramatiq_worker_runs_the_published_message(rabbit: Rabbit, publisher: Publisher) -> None:
    worker = Worker(rabbit.broker, queues={rabbit.queue}, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        job_id = str(uuid.uuid4())
        await publisher.publish(rabbit.actor.message(job_id))
        assert await asyncio.to_thread(rabbit.ran_event.wait, 20), "the worker never ran the message"
        assert rabbit.ran == [job_id]
    finally:
        await asyncio.to_thread(worker.stop, 10_000)


async def test_200_concurrent_publishes_are_all_confirmed_and_queued_exactly_once(
    rabbit: Rabbit, publisher: Publisher
) -> None:
    job_ids = [str(uuid.uuid4()) for _ in range(200)]
    await asyncio.gather(*(publisher.publish(rabbit.actor.message(job_id)) for job_id in job_ids))
    # One connection, opened once for all the first publishes
    assert publisher.connections_opened == 1
    assert queue_lengths(rabbit.queue) == (200, 0, 0)
    queued = [Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)]
    assert sorted(queued) == sorted(job_ids)
    assert queue_lengths(rabbit.queue) == (0, 0, 0)


async def test_the_job_queue_publishes_run_export_for_the_job(rabbit: Rabbit) -> None:
    queue = DramatiqJobQueue(rabbit.actor, RABBITMQ_URL)
    job_id = uuid.uuid4()
    try:
        await queue.enqueue_export(job_id)
        await queue.ping()
    finally:
        await queue.close()
    [(_, _, body)] = drain(rabbit.queue)
    message = Message.decode(body)
    assert (message.queue_name, message.actor_name, message.args) == (
        rabbit.queue,
        "run_export",
        (str(job_id),),
    )
    with pytest.raises(QueueUnavailable):
        await queue.enqueue_export(uuid.uuid4())


# Confirm bookkeeping -----------------------------------------------------------------------


async def test_a_message_the_broker_refuses_fails_with_queue_unavailable(
    rabbit: Rabbit, publisher: Publisher
) -> None:
    await publisher.publish(rabbit.actor.message("declares the queue"))
    policy = f"{rabbit.queue}-rejects"
    await rabbitmqctl(
        "set_policy", "--apply-to", "queues", policy, f"^{rabbit.queue}$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )  # fmt: skip
    try:
        with pytest.raises(QueueUnavailable, match="nack"):
            await publisher.publish(rabbit.actor.message("refused"))
    finally:
        await rabbitmqctl("clear_policy", policy)
    await publisher.publish(rabbit.actor.message("accepted"))
    assert [Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)] == ["accepted"]


async def test_an_unroutable_message_fails_and_the_queue_is_declared_again(
    rabbit: Rabbit, publisher: Publisher
) -> None:
    await publisher.publish(rabbit.actor.message("first"))
    delete_queues(rabbit.queue)  # an operator deletes the queue under the running API
    with pytest.raises(QueueUnavailable, match="unroutable"):
        await publisher.publish(rabbit.actor.message("lost"))
    await publisher.publish(rabbit.actor.message("after"))
    assert queue_lengths(rabbit.queue) == (1, 0, 0)
    assert [Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)] == ["after"]


# Connection failures ------------------------------------------------------------------------


async def test_a_connection_killed_by_the_broker_fails_pending_publishes_then_reconnects(
    rabbit: Rabbit, publisher: Publisher
) -> None:
    confirmed: list[str] = []
    failed: list[str] = []
    reasons: set[str] = set()
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            job_id = str(uuid.uuid4())
            try:
                await publisher.publish(rabbit.actor.message(job_id))
            except QueueUnavailable as exc:
                failed.append(job_id)
                reasons.add(str(exc))
                await asyncio.sleep(0.01)
            else:
                confirmed.append(job_id)

    await publisher.publish(rabbit.actor.message("connects"))
    streams = [asyncio.create_task(stream()) for _ in range(20)]
    try:
        # Given publishes flowing on one connection
        await asyncio.sleep(0.2)
        assert confirmed
        assert not failed
        # When the broker closes that connection
        await close_connection_named(rabbit.connection_name)
        deadline = time.monotonic() + 15
        while not failed or publisher.connections_opened < 2:
            assert time.monotonic() < deadline, (len(failed), publisher.connections_opened)
            await asyncio.sleep(0.05)
        # Then the publishes it carried fail at once (not at their timeout), and publishing goes on
        # over a new connection
        assert not [reason for reason in reasons if "timed out" in reason], reasons
        recovered = len(confirmed)
        await asyncio.sleep(0.3)
        assert len(confirmed) > recovered
    finally:
        stop.set()
        await asyncio.gather(*streams)  # any exception but QueueUnavailable fails the test here
    await publisher.publish(rabbit.actor.message("after"))
    # And every confirmed message is in the queue (a failed one may or may not be)
    queued = {Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)}
    assert set(confirmed) | {"connects", "after"} <= queued
    assert queued <= set(confirmed) | set(failed) | {"connects", "after"}


@pytest.mark.parametrize("declared_through", ["the real broker", "the closed port"])
async def test_a_closed_port_is_queue_unavailable_at_once(rabbit: Rabbit, declared_through: str) -> None:
    url = url_to(closed_port())
    broker, actor = rabbit.broker, rabbit.actor
    if declared_through == "the closed port":  # the queue cannot even be declared
        broker = RabbitmqBroker(url=url, confirm_delivery=True)
        actor = dramatiq.actor(broker=broker, queue_name=rabbit.queue, actor_name="run_export")(
            lambda _: None
        )
    publisher = Publisher(broker, url, timeout=TIMEOUT)
    try:
        for _ in range(2):  # and again: a failed opening is not kept
            await fails_at_once(publisher, actor.message("nowhere"))
    finally:
        await publisher.close()
        if broker is not rabbit.broker:
            broker.close()


async def test_a_peer_that_never_answers_is_queue_unavailable_within_the_timeout(rabbit: Rabbit) -> None:
    with socket.socket() as silent:  # accepts TCP connections (backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        publisher = rabbit.publisher(url_to(silent.getsockname()[1]), timeout=1.5)
        try:
            began = time.monotonic()
            results = await asyncio.gather(
                *(publisher.publish(rabbit.actor.message(str(i))) for i in range(5)), return_exceptions=True
            )
            elapsed = time.monotonic() - began
            assert all(isinstance(result, QueueUnavailable) for result in results), results
            assert 1.4 < elapsed < 2.5
        finally:
            began = time.monotonic()
            await publisher.close()
            assert time.monotonic() - began < 1


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A TCP proxy to RabbitMQ that can reset or blackhole the publisher's connections."""
    proxy = FaultProxy("127.0.0.1", urlsplit(RABBITMQ_URL).port or 5672).start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_a_network_that_resets_connections_is_queue_unavailable_until_it_heals(
    rabbit: Rabbit, proxy: FaultProxy
) -> None:
    # The queue is declared through the real broker; only the publisher's connection is proxied.
    # Failing "at once" is checked against a bound well below the timeout (not a tight one).
    publisher = rabbit.publisher(proxy.url_for(RABBITMQ_URL), timeout=TIMEOUT)
    try:
        await publisher.publish(rabbit.actor.message("before"))
        # Connections reset under publishes in flight: each is confirmed or fails, none waits
        pending = [asyncio.create_task(publisher.publish(rabbit.actor.message(str(i)))) for i in range(50)]
        await asyncio.sleep(0)
        began = time.monotonic()
        proxy.cut()
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(result is None or isinstance(result, QueueUnavailable) for result in results), results
        assert time.monotonic() - began < TIMEOUT / 2
        # Every new connection reset mid-handshake: QueueUnavailable at once, never another error
        for _ in range(3):
            await fails_at_once(publisher, rabbit.actor.message("reset"))
        proxy.restore()
        await publisher.publish(rabbit.actor.message("after"))
    finally:
        await publisher.close()
    queued = [Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)]
    assert queued[0] == "before"
    assert queued[-1] == "after"
    assert "reset" not in queued


async def test_a_connection_gone_silent_is_dropped_after_one_timeout(
    rabbit: Rabbit, proxy: FaultProxy
) -> None:
    timeout = 3.0  # the bounds below tell one timeout from none and from two, with room to spare
    publisher = rabbit.publisher(proxy.url_for(RABBITMQ_URL), timeout=timeout)
    try:
        await publisher.publish(rabbit.actor.message("before"))
        proxy.blackhole()  # the open connection stays open but nothing comes back
        for what in ("no confirm", "no new connection"):
            began = time.monotonic()
            with pytest.raises(QueueUnavailable):
                await publisher.publish(rabbit.actor.message(what))
            assert timeout - 0.1 < time.monotonic() - began < timeout * 1.6
        proxy.restore()
        # The silent connection was given up, so this one goes out on a new connection at once
        began = time.monotonic()
        await publisher.publish(rabbit.actor.message("after"))
        assert time.monotonic() - began < timeout / 2
    finally:
        await publisher.close()


async def test_a_publish_that_joined_an_opening_which_then_fails_opens_its_own(
    rabbit: Rabbit, proxy: FaultProxy
) -> None:
    # The queue is declared through the real broker; only the publisher's connection is proxied
    publisher = rabbit.publisher(proxy.url_for(RABBITMQ_URL), timeout=3)
    try:
        proxy.blackhole()
        first = asyncio.create_task(publisher.publish(rabbit.actor.message("first")))
        deadline = time.monotonic() + 2
        while publisher.connections_opened == 0:  # its opening is stuck behind the partition
            assert time.monotonic() < deadline, "the first publish never opened a connection"
            await asyncio.sleep(0.01)
        second = asyncio.create_task(publisher.publish(rabbit.actor.message("second")))
        await asyncio.sleep(0.2)  # waiting on the same opening
        assert publisher.connections_opened == 1
        await asyncio.to_thread(proxy.restore)  # which resets the stuck connection
        # The publish that started the opening fails with it; the one that only joined it gets a
        # try of its own on a new connection, well within its deadline
        with pytest.raises(QueueUnavailable, match="connection failed"):
            await first
        await second
        assert publisher.connections_opened == 2
    finally:
        await publisher.close()
    assert [Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)] == ["second"]


async def test_publishing_after_close_is_queue_unavailable(rabbit: Rabbit, publisher: Publisher) -> None:
    await publisher.publish(rabbit.actor.message("before"))
    await publisher.close()
    with pytest.raises(QueueUnavailable, match="closed"):
        await publisher.publish(rabbit.actor.message("after"))
    assert publisher.connections_opened == 1  # no connection opened after close
    await publisher.close()  # twice is fine
    assert [Message.decode(body).args[0] for _, _, body in drain(rabbit.queue)] == ["before"]


async def test_closing_fails_the_publishes_still_waiting(rabbit: Rabbit, publisher: Publisher) -> None:
    await publisher.publish(rabbit.actor.message("connects"))
    pending = [asyncio.create_task(publisher.publish(rabbit.actor.message(str(i)))) for i in range(50)]
    await asyncio.sleep(0)  # every one handed to the channel, none confirmed yet
    began = time.monotonic()
    await publisher.close()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert time.monotonic() - began < TIMEOUT / 2  # failed by the close, not by their timeout
    assert all(result is None or isinstance(result, QueueUnavailable) for result in results), results
    assert any(isinstance(result, QueueUnavailable) for result in results)


# Queue depths (what /metrics and /readyz read) ------------------------------------------------


async def test_queue_depths_count_ready_messages_over_the_publishing_connection(
    rabbit: Rabbit, publisher: Publisher
) -> None:
    missing = f"{rabbit.queue}-never-declared"
    for i in range(3):
        await publisher.publish(rabbit.actor.message(str(i)))
    names = [rabbit.queue, missing, dq_name(rabbit.queue), xq_name(rabbit.queue)]
    for _ in range(5):  # a scrape every so often
        assert await publisher.queue_depths(names) == {
            rabbit.queue: 3,
            missing: 0,  # its 404 closed a channel, not the connection
            dq_name(rabbit.queue): 0,
            xq_name(rabbit.queue): 0,
        }
    assert not queue_exists(missing)  # passive: reading never declares
    # Reads and publishes share the one connection, concurrently
    reads = [publisher.queue_depths([rabbit.queue]) for _ in range(10)]
    publishes = [publisher.publish(rabbit.actor.message(str(i))) for i in range(3, 50)]
    results = await asyncio.gather(*reads, *publishes)
    assert all(3 <= depths[rabbit.queue] <= 50 for depths in results[:10]), results[:10]
    assert publisher.connections_opened == 1
    assert await publisher.queue_depths([rabbit.queue]) == {rabbit.queue: 50}
    assert len(drain(rabbit.queue)) == 50


async def test_queue_depths_on_a_silent_network_are_unavailable_then_read_on_a_new_connection(
    rabbit: Rabbit, proxy: FaultProxy
) -> None:
    publisher = rabbit.publisher(proxy.url_for(RABBITMQ_URL), timeout=1.5)
    try:
        await publisher.publish(rabbit.actor.message("queued"))
        assert await publisher.queue_depths([rabbit.queue]) == {rabbit.queue: 1}
        proxy.blackhole()
        with pytest.raises(QueueUnavailable, match="queue depth read timed out"):
            await publisher.queue_depths([rabbit.queue])
        await asyncio.to_thread(proxy.restore)
        assert await publisher.queue_depths([rabbit.queue]) == {rabbit.queue: 1}
        assert publisher.connections_opened == 2  # the silent connection was given up
    finally:
        await publisher.close()


async def test_queue_depths_after_the_broker_closed_the_connection_open_a_new_one(
    rabbit: Rabbit, publisher: Publisher
) -> None:
    await publisher.publish(rabbit.actor.message("queued"))
    await close_connection_named(rabbit.connection_name)
    deadline = time.monotonic() + 10
    while True:  # the close reaches the client asynchronously; a read in between may fail
        try:
            depths = await publisher.queue_depths([rabbit.queue])
        except QueueUnavailable:
            assert time.monotonic() < deadline, "no new connection"
            await asyncio.sleep(0.05)
            continue
        if publisher.connections_opened == 2:
            break
        await asyncio.sleep(0.05)
        assert time.monotonic() < deadline, "the closed connection was never noticed"
    assert depths == {rabbit.queue: 1}


async def test_the_job_queue_reads_its_three_queues_and_pings_and_says_so_when_the_broker_is_away(
    rabbit: Rabbit,
) -> None:
    queue = DramatiqJobQueue(rabbit.actor, RABBITMQ_URL)
    away = DramatiqJobQueue(rabbit.actor, url_to(closed_port()))
    try:
        await queue.enqueue_export(uuid.uuid4())
        await queue.ping()
        assert await queue.depths() == {rabbit.queue: 1, dq_name(rabbit.queue): 0, xq_name(rabbit.queue): 0}
        with pytest.raises(QueueUnavailable):
            await away.ping()
        with pytest.raises(QueueUnavailable):
            await away.depths()
    finally:
        await queue.close()
        await away.close()


async def test_queue_depths_from_a_closed_publisher_are_unavailable(rabbit: Rabbit) -> None:
    publisher = rabbit.publisher()
    await publisher.close()
    with pytest.raises(QueueUnavailable, match="closed"):
        await publisher.queue_depths([rabbit.queue])
