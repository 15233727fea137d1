#!/usr/bin/env node
// Publishes enricher contract events from Node.js with amqplib.
//
// How a chat backend written in JavaScript hands its traffic to enricher:
// each event is one JSON object published to the inbound exchange with the
// conversation id as routing key (so one conversation stays in order),
// content type application/json, persistent delivery, and a publisher
// confirm before it counts as sent.
//
//     npm install amqplib
//     ENRICHER__AMQP__URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//         node examples/producer.js WORKSPACE CONVERSATION
//
// It publishes a short conversation: a greeting, a message with the
// customer's email, an agent's answer and the close.
'use strict';

const crypto = require('crypto');
const amqp = require('amqplib');

function routingKey(event) {
  if (event.conversation_id) return event.conversation_id;
  for (const key of ['customer_id', 'email', 'platform_user_id']) {
    if (event[key]) return `customer:${event[key]}`;
  }
  return 'unrouted';
}

function conversation(workspace, conversationId) {
  const envelope = (type) => ({
    type, version: 1, id: crypto.randomUUID(), workspace_id: workspace,
    occurred_at: new Date().toISOString(), conversation_id: conversationId,
  });
  const message = (sender, text) => ({
    ...envelope('chat.message'), platform: 'web',
    platform_user_id: `js-visitor-${conversationId}`, sender, text,
  });
  return [
    message('customer', "Hi, I'm Jonas. Can you send me a quote?"),
    message('customer', 'My email is jonas.node@example.com'),
    message('agent', 'Thanks Jonas, the quote is on its way.'),
    envelope('conversation.closed'),
  ];
}

async function main() {
  const [workspace, conversationId] = process.argv.slice(2);
  if (!workspace || !conversationId) {
    console.error('usage: producer.js WORKSPACE CONVERSATION');
    process.exit(2);
  }
  const url = process.env.ENRICHER__AMQP__URL || 'amqp://guest:guest@127.0.0.1:5672/%2f';
  const exchange = process.env.ENRICHER__AMQP__INBOUND_EXCHANGE || 'enrich.in';
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  // The worker declares the same exchange; declaring it here too lets the
  // producer start first without its events being refused.
  await channel.assertExchange(exchange, 'topic', { durable: true });
  const events = conversation(workspace, conversationId);
  for (const event of events) {
    channel.publish(exchange, routingKey(event), Buffer.from(JSON.stringify(event)), {
      contentType: 'application/json',
      persistent: true,
      messageId: event.id,
      mandatory: true,
    });
  }
  // Resolves once the broker confirmed every publish; rejects on a nack.
  await channel.waitForConfirms();
  await connection.close();
  console.error(`producer.js: published ${events.length} events`);
}

main().catch((error) => {
  console.error(`producer.js: ${error.message}`);
  process.exit(1);
});
