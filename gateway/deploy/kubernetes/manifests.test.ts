import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { authService } from "../../../services/auth/service.js";
import { executorService } from "../../../services/executor/service.js";
import { logsService } from "../../../services/logs/service.js";
import { notifierService } from "../../../services/notifier/service.js";
import { adminPortSetting, DEFAULT_ADMIN_PORTS } from "../../../services/platform/admin.js";
import { commonSettings, type Setting } from "../../../services/platform/config.js";
import { DEFAULT_PORTS, entryPoint, PROCESS_NAMES, type ProcessName, REPO_ROOT } from "../../cli/stack.js";
import { gatewaySettings } from "../../config.js";

const HERE = fileURLToPath(new URL(".", import.meta.url));

/** The slice of the Kubernetes schema these manifests use; the test checks what it relies on. */
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  // biome-ignore lint/suspicious/noExplicitAny: each kind's spec is checked field by field below
  spec?: any;
}
interface Container {
  name: string;
  image: string;
  command: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  resources?: { requests?: { cpu?: string; memory?: string } };
}

const API_VERSIONS: Record<string, string> = {
  Deployment: "apps/v1",
  Service: "v1",
  ConfigMap: "v1",
  Secret: "v1",
  Job: "batch/v1",
};

function load(file: string): Manifest[] {
  const docs = parseAllDocuments(readFileSync(path.join(HERE, file), "utf8"));
  return docs.map((doc) => {
    expect(doc.errors, `${file}: ${doc.errors.join("; ")}`).toEqual([]);
    return doc.toJS() as Manifest;
  });
}

const kustomization = load("kustomization.yaml")[0] as unknown as { resources: string[] };
const manifests = kustomization.resources.flatMap((file) => load(file).map((m) => ({ file, ...m })));
const find = (kind: string, name: string) =>
  manifests.find((m) => m.kind === kind && m.metadata.name === name);

type Settings = Record<string, Setting<unknown>>;
const serviceDefinitions = [authService, executorService, logsService, notifierService];
function settingsOf(name: ProcessName): Settings {
  if (name === "gateway") return gatewaySettings as Settings;
  const def = serviceDefinitions.find((d) => d.name === name);
  if (!def) throw new Error(`no service definition for ${name}`);
  return { ...commonSettings, adminPort: adminPortSetting(name), ...(def.settings as Settings) };
}

/**
 * What a deployment must set: settings without a default, plus those whose default only suits a
 * laptop: the NATS URL, other services' loopback URLs and the development secrets.
 */
function requiredVariables(name: ProcessName): string[] {
  const names = Object.values(settingsOf(name)).map((s) => s.name);
  const productionOnly = ["NATS_URL", "AUTH_URL", "EXECUTOR_URL", "LOGS_URL", "NOTIFIER_URL"];
  productionOnly.push("LOGS_CURSOR_SECRET", "FLOWPLANE_ENCRYPTION_KEY");
  return [
    ...Object.values(settingsOf(name))
      .filter((s) => s.defaultText === undefined)
      .map((s) => s.name),
    ...productionOnly.filter((variable) => names.includes(variable)),
  ];
}

/** Every variable the container receives: its env list and the ConfigMaps/Secrets it imports. */
function providedVariables(container: Container): Map<string, string | undefined> {
  const provided = new Map<string, string | undefined>();
  for (const source of container.envFrom ?? []) {
    const ref = source.configMapRef ?? source.secretRef;
    const kind = source.configMapRef ? "ConfigMap" : "Secret";
    const object = ref && find(kind, ref.name);
    expect(object, `${kind} ${ref?.name} imported by ${container.name}`).toBeDefined();
    for (const [key, value] of Object.entries({ ...object?.data, ...object?.stringData }))
      provided.set(key, value);
  }
  for (const variable of container.env ?? []) {
    const secretRef = variable.valueFrom?.secretKeyRef;
    if (secretRef) {
      const secret = find("Secret", secretRef.name);
      expect(secret?.stringData ?? secret?.data, `Secret ${secretRef.name}`).toHaveProperty(secretRef.key);
    } else {
      expect(typeof variable.value, `${container.name} ${variable.name} value`).toBe("string");
    }
    provided.set(variable.name, variable.value);
  }
  return provided;
}

describe("Kubernetes manifests", () => {
  it("lists every manifest in the folder in kustomization.yaml", () => {
    const files = readdirSync(HERE).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
    expect([...kustomization.resources].sort()).toEqual(files.sort());
  });

  it("gives every object a known apiVersion, a kind and a name", () => {
    for (const m of manifests) {
      expect(API_VERSIONS[m.kind], `${m.file}: kind ${m.kind}`).toBeDefined();
      expect(m.apiVersion, `${m.file}: ${m.kind} apiVersion`).toBe(API_VERSIONS[m.kind]);
      expect(m.metadata?.name, `${m.file}: ${m.kind} metadata.name`).toMatch(
        /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/,
      );
    }
    const names = manifests.map((m) => `${m.kind}/${m.metadata.name}`);
    expect(new Set(names).size).toBe(names.length);
  });

  for (const name of PROCESS_NAMES) {
    describe(name, () => {
      const deployment = find("Deployment", name);
      const service = find("Service", name);
      const container = deployment?.spec?.template?.spec?.containers?.[0] as Container | undefined;

      it("has a Deployment and a Service selecting its pods", () => {
        expect(deployment, `Deployment ${name}`).toBeDefined();
        expect(service, `Service ${name}`).toBeDefined();
        const podLabels = deployment?.spec.template.metadata.labels as Record<string, string>;
        expect(podLabels).toMatchObject(deployment?.spec.selector.matchLabels);
        expect(podLabels).toMatchObject(service?.spec.selector);
        expect(deployment?.spec.replicas).toBe(["executor", "notifier", "gateway"].includes(name) ? 2 : 1);
        expect(deployment?.spec.template.spec.containers).toHaveLength(1);
      });

      it("runs the process's entry point from the image on its API and admin ports", () => {
        if (!container) throw new Error(`Deployment ${name} has no container`);
        expect(container.image).toMatch(/\S/);
        const entry = path.relative(REPO_ROOT, entryPoint(name));
        expect(container.command).toEqual(["node", "--import", "tsx", entry]);
        expect(existsSync(path.join(REPO_ROOT, entry))).toBe(true);
        const env = providedVariables(container);
        const upper = name.toUpperCase();
        const ports = container.ports ?? [];
        for (const port of ports) expect(Number.isInteger(port.containerPort), `${name} port`).toBe(true);
        expect(env.get(`${upper}_PORT`)).toBe(String(DEFAULT_PORTS[name]));
        expect(env.get(`${upper}_ADMIN_PORT`)).toBe(String(DEFAULT_ADMIN_PORTS[name]));
        expect(ports.map((p) => p.containerPort).sort()).toEqual(
          [DEFAULT_PORTS[name], DEFAULT_ADMIN_PORTS[name]].sort(),
        );
        // The Service forwards to ports the container declares.
        for (const port of (service?.spec.ports ?? []) as { port: number; targetPort: string | number }[]) {
          const target = ports.find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
          expect(target?.containerPort, `${name} Service port ${port.port}`).toBe(port.port);
        }
      });

      it("probes /readyz and /healthz on the admin port it declares", () => {
        if (!container) throw new Error(`Deployment ${name} has no container`);
        const adminPort = Number(providedVariables(container).get(`${name.toUpperCase()}_ADMIN_PORT`));
        const portOf = (port: string | number | undefined) =>
          container.ports?.find((p) => p.name === port || p.containerPort === port)?.containerPort;
        expect(container.readinessProbe?.httpGet?.path).toBe("/readyz");
        expect(portOf(container.readinessProbe?.httpGet?.port)).toBe(adminPort);
        expect(container.livenessProbe?.httpGet?.path).toBe("/healthz");
        expect(portOf(container.livenessProbe?.httpGet?.port)).toBe(adminPort);
      });

      it("requests resources", () => {
        expect(container?.resources?.requests?.cpu).toMatch(/^\d+m?$/);
        expect(container?.resources?.requests?.memory).toMatch(/^\d+(Mi|Gi)$/);
      });

      it("provides every variable the process requires, and only variables it reads", () => {
        if (!container) throw new Error(`Deployment ${name} has no container`);
        const provided = providedVariables(container);
        for (const variable of requiredVariables(name)) {
          expect(provided.has(variable), `${name} needs ${variable}`).toBe(true);
        }
        // Set explicitly on the container (not through the shared ConfigMap): a typo would be ignored.
        const known = Object.values(settingsOf(name)).map((s) => s.name);
        for (const variable of container.env ?? []) {
          expect(known, `${name} does not read ${variable.name}`).toContain(variable.name);
        }
        // Other services are addressed through their Service on their API port.
        for (const [variable, value] of provided) {
          if (!/^(AUTH|EXECUTOR|LOGS|NOTIFIER)_URL$/.test(variable) || value === undefined) continue;
          const target = new URL(value);
          const targetService = find("Service", target.hostname);
          const servicePorts = (targetService?.spec.ports ?? []) as { port: number }[];
          expect(
            servicePorts.map((p) => p.port),
            `${name} ${variable}=${value}`,
          ).toContain(Number(target.port));
          expect(target.hostname).toBe(variable.slice(0, -"_URL".length).toLowerCase());
        }
      });
    });
  }

  it("migrates with a Job that gets DATABASE_URL", () => {
    const job = find("Job", "flowplane-migrate");
    const container = job?.spec.template.spec.containers[0] as Container;
    expect(container.command).toEqual(["node", "--import", "tsx", "gateway/cli/main.ts", "migrate"]);
    expect(job?.spec.template.spec.restartPolicy).toMatch(/^(OnFailure|Never)$/);
    expect(providedVariables(container).has("DATABASE_URL")).toBe(true);
  });

  it("builds an image that exposes every API and admin port", () => {
    const dockerfile = readFileSync(path.join(REPO_ROOT, "Dockerfile"), "utf8");
    const exposed = dockerfile
      .split("\n")
      .filter((line) => line.startsWith("EXPOSE "))
      .flatMap((line) => line.slice("EXPOSE ".length).trim().split(/\s+/).map(Number));
    for (const name of PROCESS_NAMES) {
      expect(exposed, `${name} API port`).toContain(DEFAULT_PORTS[name]);
      expect(exposed, `${name} admin port`).toContain(DEFAULT_ADMIN_PORTS[name]);
    }
  });
});
