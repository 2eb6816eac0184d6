// Appended by guest-plugins/js/build.sh to the bindings that componentize-js generates
// (`--append-bindings`, patched in by componentize-js-0.23.0.patch). It runs at build time, in the
// bindings' realm, after their top level and before the snapshot. Why: SpiderMonkey makes a
// realm's standard classes (Promise, BigInt, DataView, typed arrays...) and their self-hosted
// methods on first use, and the user's top level runs in another realm, so without this every
// call under --isolation message, which starts from the snapshot, rebuilt them all
// (bench/PROFILES.md, "Issue 10, fifth pass"). It calls no plugin code: it uses what the
// generated glue uses on every call, on a scratch buffer of its own.
{
  const buffer = new ArrayBuffer(16);
  const bytes = new Uint8Array(buffer, 0, 8);
  const view = new DataView(buffer);
  view.setInt8(0, 1, true);
  view.setUint8(1, 2, true);
  view.setUint32(4, 3, true);
  view.getInt8(0, true);
  view.getUint8(1, true);
  view.getInt32(4, true);
  view.getUint32(4, true);
  view.getBigInt64(8, true);
  new Uint8Array(buffer.slice(0, 4)).set(bytes.subarray(0, 4));
  new BigUint64Array(1)[0] = BigInt.asUintN(64, BigInt(1)) + BigInt.asIntN(64, 2n);
  Array.isArray(bytes);
  Number.isInteger(1);
  `${String(1)}`.split('').map((c) => c).join('');
  Object.create(Object.prototype);
  Object.defineProperty({}, Symbol.for('sandport'), { value: 1 });
  const handles = new Map([[1, 1]]);
  handles.get(1);
  handles.delete(1);
  const registry = new FinalizationRegistry(() => {});
  const token = {};
  registry.register({}, 1, token);
  registry.unregister(token);
  new TypeError('warm-up');
  // An exported function is async: its first await makes the Promise machinery.
  (async () => {
    try {
      await null;
    } catch (e) {
      void e;
    }
  })();
}
