// The chat protocol (PROTOCOL.md) over a WebSocket.
//
// Frames are a 4-byte big-endian length and a body (a type byte and its
// payload). They travel in binary WebSocket messages; a message may carry
// several frames or part of one, so incoming bytes are read as one stream.
// Every request gets exactly one reply, in order: a FIFO of pending
// requests matches each RESPONSE or LIST to the oldest. SENDTO frames are
// never replies; they go to onMessage.

export const TYPE = {
  login: 0x01, list: 0x02, sendto: 0x03, logout: 0x04,
  RESPONSE: 0x81, LIST: 0x82, SENDTO: 0x83,
};

// The words the terminal client prints for a RESPONSE's result byte.
export const RESULT_WORDS = ["Success", "Failure", "Malformed packet"];

// The largest frame body accepted from the server: its default limit plus
// the 80 bytes a relayed message may grow by.
export const MAX_FRAME = (1 << 20) + 80;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8"); // names and texts the server checked

// ProtocolError means the server sent what no server may send.
export class ProtocolError extends Error {}

// ClosedError rejects requests that the connection ended before answering.
export class ClosedError extends Error {}

function frame(type, payload) {
  const body = 1 + payload.length;
  const b = new Uint8Array(4 + body);
  new DataView(b.buffer).setUint32(0, body);
  b[4] = type;
  b.set(payload, 5);
  return b;
}

function nameBytes(name) {
  const n = encoder.encode(name);
  if (n.length > 255) throw new RangeError("name longer than 255 bytes");
  const b = new Uint8Array(1 + n.length);
  b[0] = n.length;
  b.set(n, 1);
  return b;
}

export function encodeLogin(name) { return frame(TYPE.login, nameBytes(name)); }
export function encodeList() { return frame(TYPE.list, new Uint8Array(0)); }
export function encodeLogout() { return frame(TYPE.logout, new Uint8Array(0)); }
export function encodeSendTo(to, text) {
  const n = nameBytes(to);
  const t = encoder.encode(text);
  const p = new Uint8Array(n.length + t.length);
  p.set(n);
  p.set(t, n.length);
  return frame(TYPE.sendto, p);
}

// FrameReader cuts a stream of bytes, given in pieces of any size, into
// frame bodies.
export class FrameReader {
  constructor(max = MAX_FRAME) {
    this.max = max;
    this.buf = new Uint8Array(0);
  }

  // push adds bytes and returns the complete frame bodies now available.
  // It throws ProtocolError on a length beyond the limit, or of zero.
  push(bytes) {
    if (this.buf.length === 0) {
      this.buf = bytes;
    } else {
      const b = new Uint8Array(this.buf.length + bytes.length);
      b.set(this.buf);
      b.set(bytes, this.buf.length);
      this.buf = b;
    }
    const bodies = [];
    let off = 0;
    while (this.buf.length - off >= 4) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset + off, 4).getUint32(0);
      if (len === 0 || len > this.max) throw new ProtocolError(`frame length ${len} out of range`);
      if (this.buf.length - off - 4 < len) break;
      bodies.push(this.buf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    this.buf = this.buf.slice(off);
    return bodies;
  }
}

// parseNames reads the names of a LIST payload, back to back.
function parseNames(p) {
  const names = [];
  let i = 0;
  while (i < p.length) {
    const n = p[i];
    if (i + 1 + n > p.length) throw new ProtocolError("LIST name cut short");
    names.push(decoder.decode(p.subarray(i + 1, i + 1 + n)));
    i += 1 + n;
  }
  return names;
}

// parseFrom reads the name and text of a SENDTO payload; the text is
// returned as bytes too, so that it can be shown exactly.
function parseSendTo(p) {
  if (p.length < 1 || 1 + p[0] > p.length) throw new ProtocolError("SENDTO name cut short");
  const nameB = p.subarray(1, 1 + p[0]);
  const textB = p.subarray(1 + p[0]);
  return { from: decoder.decode(nameB), fromBytes: nameB, text: decoder.decode(textB), textBytes: textB };
}

// Connection is one WebSocket to the chat server.
//
// Requests return promises: login, sendto and logout resolve to a result
// word ("Success", "Failure", "Malformed packet"); list resolves to the
// names, or to "Failure". When the connection ends, every pending request
// is rejected with ClosedError and onClose(event) is called once.
export class Connection {
  constructor(url, { onMessage = () => {}, onClose = () => {}, onOpen = () => {} } = {}) {
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.pending = []; // {kind, resolve, reject}, oldest first
    this.reader = new FrameReader();
    this.closed = false;
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => onOpen();
    this.ws.onmessage = (ev) => this.receive(ev.data);
    this.ws.onclose = (ev) => this.ended(ev);
    this.ws.onerror = () => {}; // onclose follows, with the code
  }

  receive(data) {
    if (typeof data === "string") {
      this.fail("text message from the server");
      return;
    }
    let bodies;
    try {
      bodies = this.reader.push(new Uint8Array(data));
      for (const body of bodies) this.dispatch(body);
    } catch (e) {
      this.fail(e.message);
    }
  }

  dispatch(body) {
    const type = body[0];
    const p = body.subarray(1);
    switch (type) {
      case TYPE.SENDTO: {
        this.onMessage(parseSendTo(p));
        return;
      }
      case TYPE.RESPONSE: {
        if (p.length !== 1 || p[0] > 2) throw new ProtocolError("bad RESPONSE");
        const req = this.pending.shift();
        if (!req) throw new ProtocolError("RESPONSE with no request pending");
        req.resolve(RESULT_WORDS[p[0]]);
        return;
      }
      case TYPE.LIST: {
        const req = this.pending[0];
        if (!req || req.kind !== "list") throw new ProtocolError("LIST that answers no list");
        const names = parseNames(p);
        this.pending.shift();
        req.resolve(names);
        return;
      }
    }
    throw new ProtocolError(`unknown frame type 0x${type.toString(16)}`);
  }

  // fail closes a connection whose server broke the protocol.
  fail(why) {
    console.error("chat: protocol error:", why);
    this.ws.close(1000, "protocol error");
  }

  ended(ev) {
    if (this.closed) return;
    this.closed = true;
    const pending = this.pending;
    this.pending = [];
    for (const req of pending) req.reject(new ClosedError("connection closed"));
    this.onClose(ev);
  }

  request(kind, bytes) {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ClosedError("not connected"));
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ kind, resolve, reject });
      this.ws.send(bytes);
    });
  }

  login(name) { return this.request("login", encodeLogin(name)); }
  list() { return this.request("list", encodeList()); }
  sendto(to, text) { return this.request("sendto", encodeSendTo(to, text)); }
  logout() { return this.request("logout", encodeLogout()); }

  close() { this.ws.close(1000); }
}

// Checks made before sending, as the terminal client makes them.

const whiteSpace = /[\p{White_Space}\p{Cc}]/u;

// checkName returns "Bad username" for a name the server would refuse for
// sure: empty, more than 20 characters, white space or control characters.
// The server's Failure covers the rest of the rules.
export function checkName(name) {
  const n = [...name].length;
  if (n === 0 || n > 20 || whiteSpace.test(name)) return "Bad username";
  return null;
}

// checkText returns "Bad message" for a text the page does not send: empty,
// or more than 65,535 characters.
export function checkText(text) {
  const n = [...text].length;
  if (n === 0 || n > 65535) return "Bad message";
  return null;
}
