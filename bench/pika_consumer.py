"""The plain pika consumer the drain benchmark compares workers with (one process, no pool).

``python bench/pika_consumer.py QUEUE COUNT [--prefetch N] [--batch K]``: consume ``COUNT`` messages from
``QUEUE`` with the worker's QoS, acking each one (``--batch 1``) or every ``K`` with ``multiple=True``,
then exit. The body is not decoded: this is the floor any AMQP consumer written in Python stands on.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import pika_parameters  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("queue")
    parser.add_argument("count", type=int)
    parser.add_argument("--prefetch", type=int, default=8, help="basic.qos prefetch (the worker's -c 2 x 4)")
    parser.add_argument("--batch", type=int, default=1, help="ack with multiple=True every BATCH messages")
    args = parser.parse_args(argv)

    import pika

    connection = pika.BlockingConnection(pika_parameters())
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch, global_qos=True)
    state = {"seen": 0, "pending": 0}

    def on_message(ch: object, method: object, properties: object, body: bytes) -> None:
        state["seen"] += 1
        state["pending"] += 1
        if state["pending"] >= args.batch or state["seen"] >= args.count:
            channel.basic_ack(delivery_tag=method.delivery_tag, multiple=args.batch > 1)  # type: ignore[attr-defined]
            state["pending"] = 0
        if state["seen"] >= args.count:
            channel.stop_consuming()

    channel.basic_consume(args.queue, on_message, auto_ack=False)
    channel.start_consuming()
    connection.close()


if __name__ == "__main__":
    main()
