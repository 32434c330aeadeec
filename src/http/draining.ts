import type { FastifyInstance } from 'fastify';
import { closeAfterAnswer } from './response-hooks.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Begins a graceful stop while still listening: /readyz answers 503, and every answer closes its connection, so
     * that keep-alive clients move on without a request of theirs meeting a closing socket.
     */
    startDraining(): void;
  }
}

/** Adds `startDraining` to the app; returns whether it was called. */
export function registerDraining(app: FastifyInstance): () => boolean {
  let draining = false;
  app.decorate('startDraining', () => {
    draining = true;
  });
  app.addHook('onRequest', (_request, reply, done) => {
    if (draining) closeAfterAnswer(reply);
    done();
  });
  return () => draining;
}
