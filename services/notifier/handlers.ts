import type { ServiceImpl } from "@connectrpc/connect";
import { InvalidArgumentError } from "../platform/errors.js";
import type { NotifierService } from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { newId } from "../platform/ids.js";
import {
  type DeliveryDeps,
  enqueueDelivery,
  getDelivery,
  insertDelivery,
  listDeliveries,
  redeliver,
} from "./deliveries.js";
import { serializeEvent, TEST_EVENT } from "./payload.js";
import {
  createSubscription,
  deleteSubscription,
  getSubscriptionRow,
  listSubscriptions,
  type SubscriptionDeps,
  subscriptionMessage,
  updateSubscription,
} from "./subscriptions.js";

export type HandlerDeps = SubscriptionDeps & Pick<DeliveryDeps, "db" | "js" | "names" | "now">;

function requireIds(fields: Record<string, string>): void {
  for (const [name, value] of Object.entries(fields)) {
    if (value === "") throw new InvalidArgumentError(`${name} is required`);
  }
}

export function notifierHandlers(deps: HandlerDeps): ServiceImpl<typeof NotifierService> {
  return {
    async createSubscription(req) {
      const row = await createSubscription(deps, req.tenantId, req.subscription, new Date(deps.now()));
      return { subscription: subscriptionMessage(row) };
    },
    async listSubscriptions(req) {
      const rows = await listSubscriptions(deps.db, req.tenantId);
      return { subscriptions: rows.map(subscriptionMessage) };
    },
    async getSubscription(req) {
      requireIds({ tenant_id: req.tenantId, id: req.id });
      return { subscription: subscriptionMessage(await getSubscriptionRow(deps.db, req.tenantId, req.id)) };
    },
    async updateSubscription(req) {
      requireIds({ tenant_id: req.tenantId, id: req.id });
      const row = await updateSubscription(
        deps,
        req.tenantId,
        req.id,
        req.subscription,
        req.updateMask?.paths ?? [],
        new Date(deps.now()),
      );
      return { subscription: subscriptionMessage(row) };
    },
    async deleteSubscription(req) {
      requireIds({ tenant_id: req.tenantId, id: req.id });
      await deleteSubscription(deps.db, req.tenantId, req.id);
      return {};
    },
    async listDeliveries(req) {
      requireIds({ tenant_id: req.tenantId, subscription_id: req.subscriptionId });
      return listDeliveries(deps.db, req.tenantId, req.subscriptionId, req.limit, req.cursor);
    },
    async redeliver(req) {
      requireIds({
        tenant_id: req.tenantId,
        subscription_id: req.subscriptionId,
        delivery_id: req.deliveryId,
      });
      return { delivery: await redeliver(deps, req.tenantId, req.subscriptionId, req.deliveryId) };
    },
    async testSubscription(req) {
      requireIds({ tenant_id: req.tenantId, id: req.id });
      const sub = await getSubscriptionRow(deps.db, req.tenantId, req.id);
      const now = new Date(deps.now());
      const eventId = newId("evt", now.getTime());
      const id = await insertDelivery(
        deps.db,
        {
          tenantId: sub.tenant_id,
          subscriptionId: sub.id,
          channel: sub.channel,
          dedupeKey: `test:${eventId}`,
          eventId,
          eventType: TEST_EVENT,
          executionId: "",
          workflowId: "",
          payload: serializeEvent({
            id: eventId,
            type: TEST_EVENT,
            timestamp: now.getTime(),
            data: { subscriptionId: sub.id, message: "This is a test notification from Flowplane." },
          }),
        },
        now,
      );
      await enqueueDelivery(deps.js, deps.names, {
        id,
        tenant_id: sub.tenant_id,
        channel: sub.channel,
        round: 0,
      });
      return { delivery: await getDelivery(deps.db, req.tenantId, id) };
    },
  };
}
