// `xml-response`: a Weir filter that turns JSON responses into XML (componentize-js).
//
// On the way out, a response whose `content-type` is JSON (`application/json`, or any
// `+json` type) becomes an XML document with the root element the config names; other
// responses pass unchanged. The route's use must say `body = true`: without the body
// there is nothing to convert.
//
// With `negotiate = true` only clients that ask for XML (`accept: application/xml` or
// `text/xml`) get it: `on-request` remembers what the client asked for, in this module's
// memory, and `on-response` reads it back. Both calls of one request run in the same
// instance (and every request gets a fresh one), so the flag belongs to exactly one
// request. The upstream is then asked for JSON, and responses say `vary: accept`.
//
// Config (the `config` table of the route's use):
//   root      name of the root element                      default "response"
//   item      name of the element for each array item       default "item"
//   negotiate convert only when the client accepts XML      default false
// A config that does not fit is logged and answered `500 {"message": "plugin misconfigured"}`.

import { get as getConfig } from 'weir:plugin/config@0.2.0';
import { write as log } from 'weir:plugin/log@0.2.0';

// What `on-request` learnt about this request, for `on-response`.
let clientWantsXml = true;

export function onRequest(request) {
  const config = readConfig();
  if (config === null) {
    return { tag: 'respond', val: misconfigured() };
  }
  if (config.negotiate) {
    clientWantsXml = acceptsXml(header(request.headers, 'accept'));
    if (clientWantsXml) {
      // The upstream's JSON is what we convert, whatever it could have sent.
      request.headers = withHeader(request.headers, 'accept', 'application/json');
    }
  }
  return { tag: 'continue', val: request };
}

export function onResponse(response) {
  const config = readConfig();
  if (config === null) {
    return misconfigured();
  }
  if (config.negotiate) {
    response.headers = appendVary(response.headers, 'accept');
    if (!clientWantsXml) {
      return response;
    }
  }
  if (!isJson(header(response.headers, 'content-type'))) {
    return response;
  }
  if (response.body === undefined || response.body === null) {
    log('warn', 'got no response body to convert: the use needs `body = true`');
    return response;
  }
  if (response.body.length === 0) {
    return response;
  }
  let value;
  try {
    value = JSON.parse(new TextDecoder().decode(response.body));
  } catch (e) {
    log('warn', `response says JSON but is not (${e.message}); passed unchanged`);
    return response;
  }
  const xml = '<?xml version="1.0" encoding="UTF-8"?>' + element(config.root, value, config.item);
  response.body = new TextEncoder().encode(xml);
  // The body is another representation now: its length and entity tag no longer apply.
  response.headers = withHeader(
    response.headers.filter(([name]) => name !== 'content-length' && name !== 'etag'),
    'content-type',
    'application/xml',
  );
  log('debug', `converted ${response.status} JSON response to XML (${response.body.length} bytes)`);
  return response;
}

// ---- JSON → XML ----

// `<name>…</name>` for one JSON value: objects become child elements named after their
// keys, arrays one `<item>` per entry, scalars text, `null` and empty arrays `<name/>`.
function element(name, value, item) {
  if (value === null || (Array.isArray(value) && value.length === 0)) {
    return `<${name}/>`;
  }
  let content;
  if (Array.isArray(value)) {
    content = value.map((entry) => element(item, entry, item)).join('');
  } else if (typeof value === 'object') {
    content = Object.entries(value)
      .map(([key, entry]) => element(xmlName(key), entry, item))
      .join('');
  } else {
    content = escapeText(String(value));
  }
  return `<${name}>${content}</${name}>`;
}

// XML 1.0's `NameStartChar` and `NameChar` (fifth edition), less `:` (namespaces).
const NAME_START =
  'A-Z_a-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFF\u200C-\u200D' +
  '\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD\u{10000}-\u{EFFFF}';
const NOT_NAME_CHAR = new RegExp(`[^${NAME_START}\\-.0-9\u00B7\u0300-\u036F\u203F-\u2040]`, 'gu');
const STARTS_NAME = new RegExp(`^[${NAME_START}]`, 'u');

// A JSON key as an XML element name: characters a name cannot hold become `_`, and a
// name that cannot start as it does gets a `_` in front.
function xmlName(key) {
  const name = key.replace(NOT_NAME_CHAR, '_');
  return STARTS_NAME.test(name) ? name : `_${name}`;
}

function escapeText(text) {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    // Control characters XML 1.0 cannot carry at all.
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '');
}

// ---- config and headers ----

// The config, checked; `null` (after logging why) when it is wrong.
function readConfig() {
  const raw = JSON.parse(getConfig());
  const config = {
    root: raw.root ?? 'response',
    item: raw.item ?? 'item',
    negotiate: raw.negotiate ?? false,
  };
  const problem = configProblem(raw, config);
  if (problem !== null) {
    log('error', `invalid config: ${problem}`);
    return null;
  }
  return config;
}

function configProblem(raw, config) {
  for (const key of Object.keys(raw)) {
    if (!(key in config)) {
      return `unknown key \`${key}\``;
    }
  }
  for (const key of ['root', 'item']) {
    if (typeof config[key] !== 'string' || xmlName(config[key]) !== config[key]) {
      return `\`${key}\` must be an XML element name, not ${JSON.stringify(config[key])}`;
    }
  }
  if (typeof config.negotiate !== 'boolean') {
    return '`negotiate` must be true or false';
  }
  return null;
}

// The operator's mistake, not the client's: answered as every Weir plugin answers it
// (the Rust SDK does the same).
function misconfigured() {
  return {
    status: 500,
    headers: [['content-type', 'application/json']],
    body: new TextEncoder().encode('{"message":"plugin misconfigured"}'),
  };
}

// The first value of a header (names arrive lower-case).
function header(headers, name) {
  const found = headers.find(([n]) => n === name);
  return found ? found[1] : '';
}

function withHeader(headers, name, value) {
  return [...headers.filter(([n]) => n !== name), [name, value]];
}

function appendVary(headers, token) {
  const vary = header(headers, 'vary');
  const tokens = vary.split(',').map((t) => t.trim().toLowerCase());
  if (tokens.includes(token) || tokens.includes('*')) {
    return headers;
  }
  return withHeader(headers, 'vary', vary ? `${vary}, ${token}` : token);
}

// `application/json`, `application/problem+json`, … with or without parameters.
function isJson(contentType) {
  const type = mediaType(contentType);
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

// Whether an `accept` header lists an XML type (or `application/*`) with a q above 0.
function acceptsXml(accept) {
  return accept.split(',').some((range) => {
    const type = mediaType(range);
    if (type !== 'application/xml' && type !== 'text/xml') {
      return false;
    }
    const q = /;\s*q\s*=\s*([0-9.]+)/i.exec(range);
    return !q || Number(q[1]) > 0;
  });
}

function mediaType(value) {
  return value.split(';')[0].trim().toLowerCase();
}
