import { describe, expect, it } from 'vitest';
import { cellText, parseCsv, parseCsvRows, SALESFORCE_CSV, toCsv, ZOHO_CSV } from '../../../src/crm/csv.ts';

/** The one CSV codec of Salesforce Bulk API 2.0 and Zoho Bulk Write (src/crm/csv.ts). */
describe('CSV codec', () => {
  const rows = [
    ['ERP_Id', 'Last_Name', 'Note'],
    ['1', 'O"Neil, Jr.', 'line 1\nline 2'],
    ['2', '', ' padded '],
  ];

  it.each([
    ['Salesforce (LF, as its jobs are created)', SALESFORCE_CSV, '\n'],
    ['Zoho (CRLF)', ZOHO_CSV, '\r\n'],
  ] as const)('%s: quotes what needs it, ends every row, and parses back to the same cells', (_name, dialect, eol) => {
    const text = toCsv(rows, dialect);
    expect(text).toBe(`ERP_Id,Last_Name,Note${eol}1,"O""Neil, Jr.","line 1\nline 2"${eol}2,," padded "${eol}`);
    expect(parseCsvRows(text)).toEqual(rows);
  });

  it('reads LF, CRLF and a byte-order mark alike; a last row without a line end is kept', () => {
    expect(parseCsvRows('\ufeffa,b\r\n1,2\n3,"x\r\ny"')).toEqual([
      ['a', 'b'],
      ['1', '2'],
      ['3', 'x\r\ny'],
    ]);
  });

  it('parseCsv names the cells by the header row; a short row reads empty cells', () => {
    expect(parseCsv('sf__Id,sf__Created,ERP_Id__c\n003A,true,7\n003B\n')).toEqual({
      header: ['sf__Id', 'sf__Created', 'ERP_Id__c'],
      rows: [
        { sf__Id: '003A', sf__Created: 'true', ERP_Id__c: '7' },
        { sf__Id: '003B', sf__Created: '', ERP_Id__c: '' },
      ],
    });
    expect(parseCsv('')).toEqual({ header: [], rows: [] });
  });

  it('writes values as text: null and undefined empty, objects as JSON, numbers and booleans as they print', () => {
    expect([null, undefined, { a: 1 }, 12.5, false].map(cellText)).toEqual(['', '', '{"a":1}', '12.5', 'false']);
    expect(toCsv([[null, { a: 'x,y' }, 3]], ZOHO_CSV)).toBe(',"{""a"":""x,y""}",3\r\n');
  });
});
