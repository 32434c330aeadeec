import type { FastifyInstance } from 'fastify';
import type { BackgroundWork } from '../services/background-work.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** The work requests leave running after their answer (a forgotten password's mail); closing waits for it. */
    backgroundWork: BackgroundWork;
  }
}

/** Makes the app's background work reachable from the instance, for closing and for tests. */
export function provideBackgroundWork(app: FastifyInstance, work: BackgroundWork): void {
  app.decorate('backgroundWork', work);
  app.addHook('onClose', () => work.settled());
}
