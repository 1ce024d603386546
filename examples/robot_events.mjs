#!/usr/bin/env node
// A social robot's event client for `ecmf-edge serve`, in plain Node (18 or newer, no packages): it follows the
// events of every stream, reacts when a person's label changes, and rides out dropped connections without
// missing an event. It uses only the documented contract (docs/integration.md): SSE ids and Last-Event-ID,
// the `end` and `gap` messages, and the fields of the event schema (GET /schema).
//
//   ecmf-edge serve --video session.mp4 --name livingroom &
//   node examples/robot_events.mjs http://127.0.0.1:8765 [--until-end]
//
// It prints one JSON line per reaction, so another program can read them.

const base = (process.argv[2] || "http://127.0.0.1:8765").replace(/\/$/, "");
const untilEnd = process.argv.includes("--until-end");
const SCHEMA_MAJOR = "1";

let lastEventId = null;          // the id of the last message handled: sent back on every reconnect
const shown = new Map();         // stream name -> the label last reacted to
const ended = new Set();
let connections = 0;

function say(what) { process.stdout.write(JSON.stringify(what) + "\n"); }

function react(event) {
  if (!event.schema_version || event.schema_version.split(".")[0] !== SCHEMA_MAJOR) {
    throw new Error(`event schema ${event.schema_version} is not version ${SCHEMA_MAJOR}.x: update this client`);
  }
  // null: nothing to go on (nobody in view, silence); "uncertain": evidence, but below --min-confidence.
  const label = event.label === null ? "nobody" : event.label;
  if (shown.get(event.stream) === label) return;
  shown.set(event.stream, label);
  const behaviour = {happy: "smile", sad: "lean in and ask gently", angry: "back off and lower the voice",
                     worried: "reassure", surprise: "pause", neutral: "carry on", uncertain: "keep watching",
                     nobody: "idle"}[label] || "carry on";
  say({stream: event.stream, t: event.timestamp, label, raw_label: event.raw_label, behaviour,
       heard: event.transcript, language: event.language});
}

function handle(message) {
  if (message.id !== undefined) lastEventId = message.id;
  const data = JSON.parse(message.data);
  if (message.event === "end") {
    ended.add(data.stream);
    say({stream: data.stream, ended: data.reason, events: data.events});
  } else if (message.event === "gap") {
    say({gap: data});             // the server no longer held what came between: state may be stale
  } else {
    react(data);
  }
}

async function follow() {
  const headers = lastEventId === null ? {} : {"Last-Event-ID": lastEventId};
  const response = await fetch(`${base}/events`, {headers});
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  connections += 1;
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const message = {};
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;      // keep-alive comments
        const at = line.indexOf(": ");
        const key = at < 0 ? line : line.slice(0, at), value = at < 0 ? "" : line.slice(at + 2);
        message[key] = key === "data" && message.data !== undefined ? message.data + "\n" + value : value;
      }
      if (message.data !== undefined) handle(message);
    }
    if (untilEnd && shown.size > 0 && [...shown.keys()].every((name) => ended.has(name))) return true;
  }
  return false;                   // the server ended the response (or went away): reconnect
}

async function main() {
  const streams = await (await fetch(`${base}/streams`)).json();
  say({following: streams.map((s) => s.name), server: base});
  for (let attempt = 0; ; attempt += 1) {
    try {
      if (await follow()) break;
    } catch (error) {
      if (attempt > 30) throw error;
      say({reconnecting: String(error.message || error)});
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  say({done: true, connections, last_event_id: lastEventId});
}

main().catch((error) => { process.stderr.write(`robot_events: ${error.message || error}\n`); process.exit(1); });
