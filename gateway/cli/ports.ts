import net from "node:net";

function listenable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** `preferred` when nothing listens on it, else any free port the kernel hands out. */
export async function pickPort(preferred: number, host = "127.0.0.1"): Promise<number> {
  if (preferred > 0 && (await listenable(preferred, host))) return preferred;
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function connects(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.setTimeout(1_000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Resolves once `host:port` accepts a TCP connection. Rejects after `timeoutMs`, or as soon as
 * `gaveUp()` returns a reason (the process that should listen has exited).
 */
export async function waitForPort(opts: {
  port: number;
  host?: string;
  timeoutMs: number;
  what: string;
  gaveUp?: () => string | undefined;
}): Promise<void> {
  const host = opts.host ?? "127.0.0.1";
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const reason = opts.gaveUp?.();
    if (reason) throw new Error(`${opts.what} ${reason}`);
    if (await connects(opts.port, host)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${opts.what} did not accept connections on ${host}:${opts.port} within ${opts.timeoutMs} ms`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
