// Validates Istio objects (JSON array on stdin) against the Istio CRD schemas
// packaged by @kubernetes-models/istio (generated from Istio's own
// crd-all.gen.yaml). Prints one line per problem; exit 1 if any.
const input = JSON.parse(await new Promise((resolve) => {
  let s = "";
  process.stdin.on("data", (d) => (s += d));
  process.stdin.on("end", () => resolve(s));
}));

let bad = 0;
for (const obj of input) {
  const [group, version] = obj.apiVersion.split("/");
  const mod = await import(`@kubernetes-models/istio/${group}/${version}/${obj.kind}`).catch(() => null);
  const Model = mod && (mod[obj.kind] || mod.default);
  const where = `${obj.kind} ${obj.metadata?.namespace ?? ""}/${obj.metadata?.name}`;
  if (!Model) {
    console.log(`${where}: no schema for ${obj.apiVersion} ${obj.kind}`);
    bad++;
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.log(`${where}: ${e.message ?? e}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
