import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "./gen/grpc/health/v1/health_pb.js";

/**
 * The standard gRPC health protocol (grpc.health.v1). The overall status ("" service name) and each
 * registered service name share one status: a process is serving or it is not.
 */
export class HealthState {
  private status = ServingStatus.NOT_SERVING;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly serviceNames: string[]) {}

  set(serving: boolean): void {
    this.status = serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    for (const listener of this.listeners) listener();
  }

  get serving(): boolean {
    return this.status === ServingStatus.SERVING;
  }

  private statusFor(service: string): ServingStatus | undefined {
    if (service === "" || this.serviceNames.includes(service)) return this.status;
    return undefined;
  }

  impl(): ServiceImpl<typeof Health> {
    const state = this;
    return {
      check(req) {
        const status = state.statusFor(req.service);
        if (status === undefined) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
        return { status };
      },
      async *watch(req, ctx) {
        const current = (): HealthCheckResponse =>
          create(HealthCheckResponseSchema, {
            status: state.statusFor(req.service) ?? ServingStatus.SERVICE_UNKNOWN,
          });
        let last = current();
        yield last;
        while (!ctx.signal.aborted) {
          await new Promise<void>((resolve) => {
            const listener = () => {
              state.listeners.delete(listener);
              resolve();
            };
            state.listeners.add(listener);
            ctx.signal.addEventListener("abort", listener, { once: true });
          });
          const next = current();
          if (next.status !== last.status && !ctx.signal.aborted) {
            last = next;
            yield next;
          }
        }
      },
    };
  }
}

export { Health, ServingStatus };
