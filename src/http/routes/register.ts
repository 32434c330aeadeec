import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppError, type FieldProblem } from '../../errors.ts';
import type { AccountsService } from '../../services/accounts.ts';
import type { Throttle } from '../../services/throttle.ts';
import { toAppError } from '../error-handler.ts';
import { clientGone, requestContext } from '../request-context.ts';
import {
  acceptDigitStringAge,
  ConflictResponse,
  DetailResponse,
  RegisterBody,
  toUserResponse,
  UserResponse,
  ValidationErrorResponse,
} from '../schemas.ts';

export const registerRoutes: FastifyPluginAsyncTypebox<{
  accounts: AccountsService;
  throttle?: Throttle | undefined;
}> = async (app, { accounts, throttle }) => {
  if (throttle) {
    // Before the body is even read: every attempt counts (R6), and a refused one costs no parsing or hashing.
    app.addHook('onRequest', (request) => throttle.admitRegistration(requestContext(request)));
  }
  for (const url of ['/register/', '/register']) {
    app.post(
      url,
      {
        config: { isMostlyHashing: true },
        schema: {
          summary: 'Register a user',
          tags: ['accounts'],
          hide: url === '/register',
          body: RegisterBody,
          response: {
            200: UserResponse,
            409: ConflictResponse,
            422: ValidationErrorResponse,
            429: DetailResponse,
          },
        },
        preValidation: acceptDigitStringAge,
        attachValidation: true,
      },
      async (request, reply) => {
        if (request.validationError) {
          throw withRegistrationProblems(
            toAppError(request.validationError),
            accounts.findRegistrationProblems((request.body ?? {}) as Record<string, unknown>),
          );
        }
        const { username, email, password, age, level } = request.body;
        const context = requestContext(request);
        const user = await accounts.registerUser({ username, email, password, age, level }, context, {
          signal: clientGone(reply),
        });
        context.audit('user_registered', { userId: user.id });
        return toUserResponse(user);
      },
    );
  }
};

const FIELD_ORDER = Object.keys(RegisterBody.properties);

/**
 * The schema's problems with the rules' problems of the fields it passed, one per field, in the fields' order (the
 * schema's, as pydantic lists them): a malformed email no longer hides a username that would be refused next.
 */
function withRegistrationProblems(schemaError: AppError, ruleProblems: FieldProblem[]): AppError {
  if (schemaError.code !== 'validation_failed') return schemaError;
  const schemaProblems = schemaError.details ?? [];
  const faulted = new Set(schemaProblems.map((problem) => problem.loc[1]));
  const problems = [...schemaProblems, ...ruleProblems.filter((problem) => !faulted.has(problem.loc[1]))];
  const rank = (problem: FieldProblem) => {
    const index = FIELD_ORDER.indexOf(String(problem.loc[1]));
    return index < 0 ? -1 : index;
  };
  problems.sort((a, b) => rank(a) - rank(b));
  return new AppError('validation_failed', schemaError.message, { details: problems });
}
