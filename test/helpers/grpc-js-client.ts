import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = fileURLToPath(new URL("../../proto", import.meta.url));

type UnaryCall = (
  request: object,
  callback: (err: grpc.ServiceError | null, response: Record<string, unknown>) => void,
) => void;

export type GrpcJsClient = grpc.Client & Record<string, UnaryCall>;

/**
 * A plain @grpc/grpc-js client built from the .proto files with proto-loader — what an internal
 * caller written without our generated code would use.
 */
export function grpcJsClient(serviceName: string, address: string): GrpcJsClient {
  const definition = protoLoader.loadSync(
    [
      "flowplane/auth/v1/auth.proto",
      "flowplane/executor/v1/executor.proto",
      "flowplane/logs/v1/logs.proto",
      "grpc/health/v1/health.proto",
    ].map((file) => path.join(PROTO_ROOT, file)),
    { includeDirs: [PROTO_ROOT], longs: Number, enums: String, defaults: true },
  );
  const loaded = grpc.loadPackageDefinition(definition);
  let node: unknown = loaded;
  for (const part of serviceName.split(".")) node = (node as Record<string, unknown>)[part];
  const Ctor = node as grpc.ServiceClientConstructor;
  return new Ctor(address, grpc.credentials.createInsecure()) as unknown as GrpcJsClient;
}

export function unary(
  client: GrpcJsClient,
  method: string,
  request: object,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const fn = client[method];
    if (!fn) {
      reject(new Error(`no method ${method}`));
      return;
    }
    fn.call(client, request, (err, response) => (err ? reject(err) : resolve(response)));
  });
}
