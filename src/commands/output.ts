/** What a command may do with its terminal; main.ts builds it over the process's streams. */
export interface CommandIo {
  /** A line of the result, to stdout. */
  print(line: string): void;
  /** A line of diagnosis (a refusal, a warning, a hint), to stderr. */
  warn(line: string): void;
  /** Text for a progress display, to stderr as it is (carriage returns and all). */
  progress(text: string): void;
  /** Whether stdout is a terminal. */
  isTerminal: boolean;
  /** Asks a yes/no question on the terminal; false at once when stdin is not one. */
  confirm(question: string): Promise<boolean>;
  /** The OS account running the command, recorded as the actor of what it changes. */
  osUser: string;
}

// Controls (escape sequences, carriage returns) in a stored user agent or name would be obeyed by the terminal.
const CONTROL_CHARACTERS = /[\p{Cc}\p{Cs}]/gu;

const cell = (value: unknown): string => {
  if (value === undefined || value === null) return '-';
  if (value instanceof Date) return value.toISOString();
  return String(value).replace(CONTROL_CHARACTERS, '?');
};

/** Prints rows as columns aligned under their headings, or `empty` when there are none. */
export function printTable(
  io: CommandIo,
  headings: readonly string[],
  rows: readonly (readonly unknown[])[],
  empty: string,
): void {
  if (rows.length === 0) {
    io.print(empty);
    return;
  }
  const text = rows.map((row) => row.map(cell));
  const widths = headings.map((heading, index) =>
    Math.max(heading.length, ...text.map((row) => (row[index] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((value, index) => (index === cells.length - 1 ? value : value.padEnd(widths[index] ?? 0)))
      .join('  ')
      .trimEnd();
  io.print(line(headings.map((heading) => heading.toUpperCase())));
  for (const row of text) io.print(line(row));
}

/** Prints a value as one JSON document. */
export function printJson(io: CommandIo, value: unknown): void {
  io.print(JSON.stringify(value, null, 2));
}

/** Prints field: value lines, the names aligned. */
export function printFields(io: CommandIo, fields: readonly (readonly [string, unknown])[]): void {
  const width = Math.max(...fields.map(([name]) => name.length));
  for (const [name, value] of fields) io.print(`${`${name}:`.padEnd(width + 2)}${cell(value)}`);
}
