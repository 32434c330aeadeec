import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { AppError } from '../../errors.ts';

export const healthRoutes: FastifyPluginAsyncTypebox<{
  isDatabaseReachable: () => Promise<boolean>;
  isDraining: () => boolean;
}> = async (app, { isDatabaseReachable, isDraining }) => {
  const Status = Type.Object({ status: Type.String() });
  // /healthz as Kubernetes names it, and /health as GoTrue and most checklists do: the same liveness answer.
  for (const url of ['/healthz', '/health']) {
    app.get(
      url,
      {
        config: { neverShed: true },
        schema: {
          summary: 'Liveness: the process answers',
          tags: ['operations'],
          hide: url === '/health',
          response: { 200: Status },
        },
      },
      async () => ({ status: 'ok' }),
    );
  }
  app.get(
    '/readyz',
    {
      config: { neverShed: true },
      schema: {
        summary: 'Readiness: the database answers',
        tags: ['operations'],
        response: { 200: Status, 503: Type.Object({ detail: Type.String() }) },
      },
    },
    async () => {
      // A load balancer that still routes here during a graceful stop learns to stop.
      if (isDraining()) {
        throw new AppError('service_unavailable', 'Shutting down', { unavailableReason: 'shutting_down' });
      }
      if (!(await isDatabaseReachable())) {
        throw new AppError('service_unavailable', 'Database unreachable', {
          unavailableReason: 'database_unavailable',
        });
      }
      return { status: 'ready' };
    },
  );
};
