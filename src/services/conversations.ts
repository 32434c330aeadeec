import type { ConversationMessage, ConversationsRepository } from '../db/conversations.ts';
import { AppError, type FieldProblem } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import { isClaimHonoured, type SessionClaim, type SessionPolicy } from './session-state.ts';

export type { ConversationMessage };

export interface MessagePage {
  /** Newest first. */
  messages: ConversationMessage[];
  /** The cursor of the next (older) page; undefined on the last page. */
  next: string | undefined;
}

export interface ConversationsService {
  /**
   * Returns the newest messages (NEWEST_MESSAGES_OF_SESSION) of the conversation of the user behind a verified
   * access token, oldest first, one a line, reading the claimed
   * session and account in the same round trip: throws invalid_token when the session is not live or the account is
   * disabled, not_found when there is no conversation.
   */
  readConversationOfSession(claim: SessionClaim): Promise<{ username: string; conversation: string }>;
  /**
   * Appends a message by the user to their own conversation; throws validation_failed for an unacceptable text,
   * conversation_full when it holds MAX_CONVERSATION_MESSAGES.
   */
  postMessage(userId: number, text: string): Promise<ConversationMessage>;
  /** Returns a page of the user's own messages, newest first; throws validation_failed for a malformed cursor. */
  listMessages(userId: number, page: { limit: number; before: string | undefined }): Promise<MessagePage>;
}

export const MAX_MESSAGE_CHARACTERS = 4000;
// With 4000 characters each, up to 160 MB of text a user: the bound on what one account can make the database keep.
export const MAX_CONVERSATION_MESSAGES = 10_000;

// C0 and C1 controls but tab and line feed, and the bidirectional embeddings, overrides and isolates that make text
// read differently from how it is stored (Trojan Source, CVE-2021-42574). Marks (U+200E, U+200F) and joiners stay.
const FORBIDDEN_CHARACTER = /(?![\t\n])[\p{Cc}\u202A-\u202E\u2066-\u2069]/u;
// A lone surrogate cannot be stored as UTF-8: PostgreSQL's driver would write U+FFFD in its place.
const LONE_SURROGATE = /\p{Cs}/u;

const CURSOR_SHAPE = /^[A-Za-z0-9_-]{1,24}$/;
const CURSOR_TEXT = /^m[1-9][0-9]{0,9}$/;
// messages.id is a 4-byte integer on PostgreSQL: a larger id names no message, on either database.
const MAX_MESSAGE_ID = 2_147_483_647;

/** Returns the opaque cursor that pages past the message with this id. */
export function encodeMessageCursor(id: number): string {
  return Buffer.from(`m${id}`, 'latin1').toString('base64url');
}

/** Returns the message id a cursor stands for, or undefined when it is not one this service made. */
export function decodeMessageCursor(cursor: string): number | undefined {
  if (!CURSOR_SHAPE.test(cursor)) return undefined;
  const text = Buffer.from(cursor, 'base64url').toString('latin1');
  if (!CURSOR_TEXT.test(text)) return undefined;
  const id = Number(text.slice(1));
  return id <= MAX_MESSAGE_ID && encodeMessageCursor(id) === cursor ? id : undefined;
}

/** Returns the text as it is stored (CRLF as LF, trimmed), or the problem that refuses it. */
export function checkMessageText(raw: string): { text: string } | { problem: FieldProblem } {
  const text = raw.replace(/\r\n/g, '\n').trim();
  const problem = (msg: string, type: string) => ({ problem: { loc: ['body', 'text'], msg, type } });
  if (LONE_SURROGATE.test(text)) return problem('Text must be valid Unicode', 'string_unicode');
  if (FORBIDDEN_CHARACTER.test(text)) {
    return problem(
      'Text must not contain control characters other than tab and newline',
      'text_control_character',
    );
  }
  // Characters as people count them (code points), not UTF-16 units: an emoji is one.
  const length = [...text].length;
  if (length === 0) return problem('String should have at least 1 character', 'string_too_short');
  if (length > MAX_MESSAGE_CHARACTERS) {
    return problem(`String should have at most ${MAX_MESSAGE_CHARACTERS} characters`, 'string_too_long');
  }
  return { text };
}

/** Builds each user's access to their own conversation: reading it, adding to it, paging through it. */
export function createConversationsService(deps: {
  conversations: ConversationsRepository;
  clock: Clock;
  policy: SessionPolicy;
}): ConversationsService {
  const { conversations, clock } = deps;
  return {
    async readConversationOfSession(claim) {
      const found = await conversations.findConversationOfSession(claim.sessionId);
      if (!found || !isClaimHonoured(claim, found, clock.now(), deps.policy)) {
        throw new AppError('invalid_token', 'Could not validate credentials');
      }
      if (!found.messages) throw new AppError('not_found', 'Conversation not found');
      return {
        username: found.username,
        conversation: found.messages.map((message) => message.body).join('\n'),
      };
    },

    async postMessage(userId, raw) {
      const checked = checkMessageText(raw);
      if ('problem' in checked) {
        throw new AppError('validation_failed', 'Invalid message', { details: [checked.problem] });
      }
      const message = await conversations.insertMessageOfUser(
        userId,
        { author: 'user', body: checked.text, createdAt: clock.now() },
        MAX_CONVERSATION_MESSAGES,
      );
      if (message === 'full') {
        throw new AppError(
          'conversation_full',
          `The conversation holds its maximum of ${MAX_CONVERSATION_MESSAGES} messages`,
        );
      }
      // The user was deleted since the request was authenticated: a token whose user is gone answers 401.
      if (!message) throw new AppError('invalid_token', 'Could not validate credentials');
      return message;
    },

    async listMessages(userId, { limit, before }) {
      const beforeId = before === undefined ? undefined : decodeMessageCursor(before);
      if (before !== undefined && beforeId === undefined) {
        throw new AppError('validation_failed', 'Invalid cursor', {
          details: [{ loc: ['query', 'before'], msg: 'Invalid cursor', type: 'value_error' }],
        });
      }
      const found = await conversations.findMessagesOfUser(userId, { limit: limit + 1, beforeId });
      const messages = found.slice(0, limit);
      const last = messages.at(-1);
      return { messages, next: found.length > limit && last ? encodeMessageCursor(last.id) : undefined };
    },
  };
}
