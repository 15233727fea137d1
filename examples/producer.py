#!/usr/bin/env python3
"""Publishes enricher contract events from Python with pika.

How a chat backend written in Python hands its traffic to enricher: each
event is one JSON object published to the inbound exchange with the
conversation id as routing key (so one conversation stays in order),
content type application/json, persistent delivery, and a publisher
confirm before it counts as sent.

    pip install pika
    ENRICHER__AMQP__URL=amqp://guest:guest@127.0.0.1:5672/%2f \
        python3 examples/producer.py WORKSPACE CONVERSATION

It publishes a short conversation: a greeting, a message with the
customer's email, an agent's answer and the close.
"""

import datetime
import json
import os
import sys
import uuid

import pika


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def routing_key(event):
    """The contract's routing key: the conversation, else the customer."""
    if "conversation_id" in event:
        return event["conversation_id"]
    for key in ("customer_id", "email", "platform_user_id"):
        if key in event:
            return "customer:" + event[key]
    return "unrouted"


def conversation(workspace, conversation_id):
    def message(sender, text):
        return {
            "type": "chat.message", "version": 1, "id": str(uuid.uuid4()),
            "workspace_id": workspace, "occurred_at": now(),
            "conversation_id": conversation_id, "platform": "web",
            "platform_user_id": "py-visitor-" + conversation_id,
            "sender": sender, "text": text,
        }

    return [
        message("customer", "Hi, I'm Priya. Can you send me a quote?"),
        message("customer", "My email is priya.python@example.com"),
        message("agent", "Thanks Priya, the quote is on its way."),
        {
            "type": "conversation.closed", "version": 1, "id": str(uuid.uuid4()),
            "workspace_id": workspace, "occurred_at": now(),
            "conversation_id": conversation_id,
        },
    ]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: producer.py WORKSPACE CONVERSATION")
    workspace, conversation_id = sys.argv[1], sys.argv[2]
    url = os.environ.get("ENRICHER__AMQP__URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    exchange = os.environ.get("ENRICHER__AMQP__INBOUND_EXCHANGE", "enrich.in")

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    # The worker declares the same exchange; declaring it here too lets the
    # producer start first without its events being refused.
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.confirm_delivery()
    events = conversation(workspace, conversation_id)
    for event in events:
        # With confirms on, basic_publish returns once the broker took the
        # message and raises if it was refused or (mandatory) unroutable.
        channel.basic_publish(
            exchange=exchange,
            routing_key=routing_key(event),
            body=json.dumps(event).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=event["id"],
            ),
            mandatory=True,
        )
    connection.close()
    print(f"producer.py: published {len(events)} events", file=sys.stderr)


if __name__ == "__main__":
    main()
