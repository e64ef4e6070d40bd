// Node's `etcd3` client (the npm package, version pinned in package.json) driving
// leases and a watch through a fixed scenario against one server, printing a
// normalized JSON transcript on stdout. server/tests/conformance/node_client.rs runs
// it against real etcd 3.4 and against Argus and compares the two transcripts
// exactly.
//
// Usage: node lease_watch.mjs 127.0.0.1:PORT
//
// Normalizations, each because the two servers must differ there:
// * lease IDs: etcd derives them from its member ID and a clock, Argus picks them at
//   random; the n-th lease granted becomes "L<n>" everywhere (fields and error
//   messages). Any other non-zero ID is left as it is, so the transcripts differ.
// * the seconds left of a live lease (time-to-live) depend on when it was asked;
//   they are checked to lie in a range, then masked (out of range: left as they
//   are, so the transcripts differ).
// * response headers: only the revision is kept (cluster and member IDs and the
//   raft term are identities of an etcd cluster). Revisions are kept as they are:
//   both servers start at revision 1 (the transcript's first step shows it).
// * watch events are listed by revision, not by response: how many revisions one
//   response carries depends on how fast the client reads. That no revision is
//   split over two responses is checked and shown.
// * keep-alive responses: how many arrived depends on timing; the transcript shows
//   the TTLs they carried and that enough arrived.
//
// Nothing here waits on a timer for an outcome except for the keep-alive phase,
// which has to outlast the leases' TTL; every wait for an event polls with a
// generous deadline.

import { Etcd3 } from 'etcd3';

const endpoint = process.argv[2];
if (!endpoint) {
  console.error('usage: node lease_watch.mjs HOST:PORT');
  process.exit(2);
}

/** How long any single wait may take (the machine is small and busy). */
const PATIENCE_MS = 30_000;
const PREFIX = '/nl/';

// Both servers listen on the loopback: no proxy, whatever the environment says.
const client = new Etcd3({ hosts: `http://${endpoint}`, grpcOptions: { 'grpc.enable_http_proxy': 0 } });
const steps = [];
/** Lease IDs (decimal strings) in the order granted; index + 1 is the name. */
const leaseIds = [];

function step(name, detail) {
  steps.push({ step: name, ...detail });
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

async function waitFor(what, pred) {
  const deadline = Date.now() + PATIENCE_MS;
  for (;;) {
    if (pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A key-value as comparable fields (key and value as text; lease named later). */
function kv(k) {
  if (!k) return null;
  return {
    key: k.key.toString(),
    value: k.value.toString(),
    create: k.create_revision,
    mod: k.mod_revision,
    version: k.version,
    lease: k.lease,
  };
}

function header(h) {
  return { revision: h.revision };
}

/** An error as its class, gRPC code (if any) and message. */
function err(e) {
  return `${e.constructor.name}: ${e.message}`;
}

async function expectError(what, f) {
  try {
    const r = await f();
    return { unexpected_success: JSON.parse(JSON.stringify(r ?? null)) };
  } catch (e) {
    return { error: err(e) };
  }
}

/**
 * A time-to-live answer, the seconds left of a live lease checked and masked: at
 * most the granted TTL, and at least what is left if the lease was last renewed
 * when `since` (a `Date.now()` taken before a renewal) was taken (the server's
 * clock cannot run faster than ours; whole seconds, rounded either way).
 */
async function timeToLive(id, keys, since) {
  const r = await client.leaseClient.leaseTimeToLive({ ID: id, keys });
  const left = Number(r.TTL);
  const granted = Number(r.grantedTTL);
  let ttl = r.TTL;
  if (left >= 0) {
    const min = Math.max(0, Math.floor(granted - (Date.now() - since) / 1000) - 1);
    ttl = left >= min && left <= granted ? '<left: checked>' : `out of range: ${left} not in ${min}..${granted}`;
  }
  return {
    header: header(r.header),
    ID: r.ID,
    TTL: ttl,
    grantedTTL: r.grantedTTL,
    // etcd lists a lease's keys in Go map order (a different order each time).
    keys: r.keys.map(k => k.toString()).sort(),
  };
}

async function rangeAll() {
  const r = await client.getAll().prefix(PREFIX).exec();
  return { header: header(r.header), count: r.count, more: r.more, kvs: r.kvs.map(kv) };
}

/** A lease granted through `client.lease(ttl)`, its keep-alive responses recorded. */
async function lease(ttl) {
  // When the lease was last renewed, at the earliest: when the request that
  // granted it, or the keep-alive last answered, was sent (answers come in order).
  let renewed = Date.now();
  const l = client.lease(ttl);
  const kept = [];
  const lost = [];
  const fired = [];
  l.on('keepaliveFired', () => fired.push(Date.now()));
  l.on('keepaliveSucceeded', res => {
    kept.push({ ID: res.ID, TTL: res.TTL });
    renewed = fired.shift() ?? renewed;
  });
  l.on('lost', e => lost.push(err(e)));
  const id = await l.grant();
  leaseIds.push(id);
  return { lease: l, id, kept, lost, renewed: () => renewed };
}

/** What the keep-alive responses of `l` said: their IDs and TTLs, and whether at least `n` came. */
function keptAlive(l, n) {
  return {
    ids: [...new Set(l.kept.map(k => k.ID))],
    ttls: [...new Set(l.kept.map(k => k.TTL))],
    at_least: { n, reached: l.kept.length >= n },
    lost: [...l.lost],
  };
}

async function main() {
  const first = await client.get(`${PREFIX}nothing`).exec();
  step('start', { header: header(first.header), kvs: first.kvs.length });

  // The watcher, before any write: every event of the prefix, with prev_kv.
  const responses = [];
  const watcher = await client.watch().prefix(PREFIX).withPreviousKV().create();
  watcher.on('data', res => responses.push(res));
  const watchErrors = [];
  watcher.on('error', e => watchErrors.push(err(e)));
  const events = () => responses.flatMap(r => r.events);
  const deleted = key => events().some(e => e.type === 'Delete' && e.kv.key.toString() === key);

  // Two leases of 3 s, kept alive by the library; a 1 s one (etcd grants at least
  // its minimum TTL, 2 s here) and a 60 s one.
  const grantedAt = Date.now();
  const a = await lease(3);
  const b = await lease(3);
  const c = await lease(1);
  const d = await lease(60);
  step('grant', { leases: leaseIds.map(nameOf) });
  // A TTL above etcd's maximum (9,000,000,000 s): the grant fails, the lease is lost.
  const tooLong = client.lease(9_000_000_001);
  const tooLongLost = [];
  tooLong.on('lost', e => tooLongLost.push(err(e)));
  step('grant too long', { grant: await expectError('grant', () => tooLong.grant()), lost: tooLongLost });

  const puts = [];
  for (const [l, key, value] of [
    [a, 'a1', 'x'],
    [a, 'a2', 'y'],
    [b, 'b1', 'p'],
    [b, 'b2', 'q'],
    [b, 'b3', 'r'],
    [d, 'd1', 'long'],
  ]) {
    const r = await l.lease.put(PREFIX + key).value(value);
    puts.push({ key, header: header(r.header) });
  }
  const plain = await client.put(`${PREFIX}plain`).value('no lease');
  puts.push({ key: 'plain', header: header(plain.header) });
  // Moving a key from one lease to another, and a key with a lease that is not there.
  const moved = await client.put(`${PREFIX}b3`).value('r2').lease(a.id).exec();
  puts.push({ key: 'b3 to L1', header: header(moved.header) });
  puts.push({ key: 'bad lease', ...(await expectError('put', () => client.put(`${PREFIX}bad`).value('v').lease('12345'))) });
  // ignore_lease: a new value, the lease kept (L2; none for the plain key).
  const keptLease = await client.put(`${PREFIX}b1`).value('p2').ignoreLease().exec();
  puts.push({ key: 'b1 ignore lease', header: header(keptLease.header) });
  const prev = await client.put(`${PREFIX}plain`).value('still no lease').ignoreLease().getPrevious();
  puts.push({ key: 'plain ignore lease', prev: kv(prev) });
  step('put', { puts });
  step('range with leases', await rangeAll());

  // Transactions comparing a key's lease.
  const txns = [];
  for (const [key, cmp, id] of [
    ['a1', '==', a.id],
    ['a1', '==', b.id],
    ['plain', '==', 0],
    ['b1', '>', 0],
    ['missing', '==', 0],
  ]) {
    const r = await client
      .if(PREFIX + key, 'Lease', cmp, id)
      .then(client.put(`${PREFIX}t-${key}`).value('then').lease(a.id))
      .else(client.get(PREFIX + key))
      .commit();
    txns.push({
      compare: `lease(${key}) ${cmp} ${id}`,
      header: header(r.header),
      succeeded: r.succeeded,
      responses: r.responses.map(o => {
        if (o.response_put) return { put: { header: header(o.response_put.header), prev: kv(o.response_put.prev_kv) } };
        const g = o.response_range;
        return { range: { header: header(g.header), count: g.count, kvs: g.kvs.map(kv) } };
      }),
    });
  }
  step('txn lease compare', { txns });

  step('time-to-live', {
    a: await timeToLive(a.id, true, a.renewed()),
    b: await timeToLive(b.id, true, b.renewed()),
    c: await timeToLive(c.id, false, c.renewed()),
    d: await timeToLive(d.id, true, grantedAt),
    missing: await timeToLive('12345', true, Date.now()),
  });

  // Keep-alives past the 3 s TTL: the library renews every TTL/3 seconds.
  await waitFor('four keep-alives of each lease, past the TTL', () =>
    Date.now() - grantedAt > 3500 && [a, b, c].every(l => l.kept.length >= 4),
  );
  step('kept alive past the TTL', {
    a: keptAlive(a, 4),
    b: keptAlive(b, 4),
    c: keptAlive(c, 4),
    d: keptAlive(d, 1),
    range: await rangeAll(),
    time_to_live_a: await timeToLive(a.id, true, a.renewed()),
    keep_alive_once: await a.lease.keepaliveOnce().then(r => ({ ID: r.ID, TTL: r.TTL })),
  });

  // Revoke: the keys of L1 go in one revision.
  await a.lease.revoke();
  await waitFor('the DELETEs of the revoked lease', () => [`${PREFIX}a1`, `${PREFIX}a2`].every(deleted));
  await c.lease.revoke();
  step('revoked', {
    time_to_live_a: await timeToLive(a.id, true, a.renewed()),
    time_to_live_c: await timeToLive(c.id, false, c.renewed()),
    put_with_revoked_lease: await expectError('put', () => a.lease.put(`${PREFIX}late`).value('z')),
    keep_alive_once_revoked: await expectError('keep-alive', () => a.lease.keepaliveOnce()),
    revoke_again: await expectError('revoke', () => client.leaseClient.leaseRevoke({ ID: a.id })),
    range: await rangeAll(),
  });

  // Stop renewing L2 and let it expire: its keys go in one revision.
  b.lease.release();
  await waitFor('the DELETEs of the expired lease', () => [`${PREFIX}b1`, `${PREFIX}b2`].every(deleted));
  step('expired', {
    time_to_live_b: await timeToLive(b.id, true, b.renewed()),
    keep_alive_once_expired: await expectError('keep-alive', () => b.lease.keepaliveOnce()),
    lost: { a: [...a.lost], b: [...b.lost] },
  });

  const leases = await client.leaseClient.leaseLeases();
  // Sorted by name (etcd lists leases in map order).
  step('leases', { leases: leases.leases.map(l => nameOf(l.ID)).sort() });
  step('getAll', {
    strings: await client.getAll().prefix(PREFIX).strings(),
    keys_with_lease: (await client.getAll().prefix(PREFIX).exec()).kvs.map(k => [k.key.toString(), k.lease]),
    time_to_live_d: await timeToLive(d.id, true, grantedAt),
  });
  await d.lease.revoke();
  await waitFor('the DELETE of the last lease revoked', () => deleted(`${PREFIX}d1`));

  // Every event the watcher saw, by revision; and which revisions (if any) came
  // split over more than one response.
  const byRevision = new Map();
  const responsesOf = new Map();
  responses.forEach((r, i) => {
    for (const e of r.events) {
      const rev = e.kv.mod_revision;
      if (!byRevision.has(rev)) byRevision.set(rev, []);
      byRevision.get(rev).push({ type: e.type, kv: kv(e.kv), prev: kv(e.prev_kv) });
      if (!responsesOf.has(rev)) responsesOf.set(rev, new Set());
      responsesOf.get(rev).add(i);
    }
  });
  step('watch', {
    revisions: [...byRevision].map(([revision, evs]) => ({ revision, events: evs })),
    split_revisions: [...responsesOf].filter(([, s]) => s.size > 1).map(([rev]) => rev),
    errors: watchErrors,
  });
  await watcher.cancel();

  // A second watcher from revision 2, created after all of it: the same events,
  // replayed from the history.
  const replayed = [];
  const late = await client.watch().prefix(PREFIX).startRevision('2').withPreviousKV().create();
  late.on('data', res => replayed.push(...res.events));
  const last = [...byRevision.keys()].at(-1);
  await waitFor('the replay up to the last revision', () => replayed.some(e => e.kv.mod_revision === last));
  const same = JSON.stringify(replayed.map(e => ({ type: e.type, kv: kv(e.kv), prev: kv(e.prev_kv) })));
  const live = JSON.stringify([...byRevision.values()].flat());
  step('watch from revision 2', { events: replayed.length, same_as_live: same === live });
  await late.cancel();
}

/** The name of a granted lease ID ("L<n>"); other IDs as they are. */
function nameOf(id) {
  const i = leaseIds.indexOf(id);
  return i < 0 ? id : `L${i + 1}`;
}

/** The transcript with every granted lease ID replaced by its name. */
function normalized() {
  let text = JSON.stringify({ endpoint: '<endpoint>', steps }, null, 1);
  leaseIds.forEach((id, i) => {
    text = text.replace(new RegExp(`\\b${id}\\b`, 'g'), `L${i + 1}`);
  });
  return text;
}

let failed = null;
try {
  await main();
} catch (e) {
  failed = e;
}
client.close();
process.stdout.write(`${normalized()}\n`);
if (failed) {
  console.error(`scenario failed: ${failed.stack ?? failed}`);
  process.exit(1);
}
process.exit(0);
