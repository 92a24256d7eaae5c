using Broker.Storage.Errors;
using FASTER.core;

namespace Broker.Storage.Logs;

/// <summary>
/// Damaged bytes a <see cref="LogReader"/> skipped: from the address after the last good entry up to the page start
/// it resumed at, and FASTER's words for what it found.
/// </summary>
internal sealed record LogDamage(long FromAddress, long ResumeAddress, string Reason);

/// <summary>
/// Reads durable entries in order, joining fragmented entries (see <see cref="EntryFragments"/>) back into one.
/// Not thread-safe: one reader serves one consumer of the log at a time.
/// <para>Damage: FASTER verifies each entry's checksum when it reads it from disk and throws on a mismatch (or on a
/// length that cannot be), having moved its position 12 bytes on, into the middle of the bad entry. Reading on from
/// there would parse payload bytes as headers, so the reader instead resumes at the next page: an entry never crosses
/// a page and every page begins with one. What lies in between is never returned; it is reported to
/// <c>onDamage</c> once per damaged run, before the first good entry after it (or when the scan runs dry).</para>
/// </summary>
internal sealed class LogReader : IDisposable
{
    private readonly Func<long, FasterLogScanIterator> _scan;
    private readonly int _pageSizeBits;
    private readonly Action<LogDamage>? _onDamage;
    private FasterLogScanIterator _iterator;
    private LogDamage? _pendingDamage;
    private byte[]? _joining;
    private int _joined;
    private long _headAddress;

    /// <summary>A reader from <paramref name="beginAddress"/> on, through iterators <paramref name="scan"/> opens at an address.</summary>
    public LogReader(Func<long, FasterLogScanIterator> scan, long beginAddress, int pageSizeBits, Action<LogDamage>? onDamage)
    {
        _scan = scan;
        _pageSizeBits = pageSizeBits;
        _onDamage = onDamage;
        _iterator = scan(beginAddress);
    }

    /// <summary>Address the next entry will be read from.</summary>
    public long NextAddress => _iterator.NextAddress;

    /// <summary>
    /// The next whole entry, its address (a fragmented entry's is its head's) and the address after it; false when
    /// no further entry is durable yet (or the end of the scan is reached).
    /// </summary>
    public bool TryGetNext(out byte[] entry, out int length, out long address, out long nextAddress)
    {
        while (true)
        {
            long before = _iterator.NextAddress;
            bool found;
            try
            {
                found = _iterator.GetNext(out entry, out length, out address, out nextAddress);
            }
            catch (FasterException error)
            {
                SkipDamageOrThrow(before, error);
                continue;
            }
            if (!found)
            {
                ReportDamage();
                return false;
            }
            if (TryJoin(entry.AsSpan(0, length), address, nextAddress, out var whole))
            {
                ReportDamage();
                if (whole is not null)
                {
                    entry = whole;
                    length = whole.Length;
                    address = _headAddress;
                }
                return true;
            }
        }
    }

    /// <summary>
    /// Like <see cref="TryGetNext(out byte[], out int, out long, out long)"/>, but copies a whole entry straight from
    /// the log's page into <paramref name="buffers"/> (no array of its own); a joined fragmented entry keeps its own array.
    /// </summary>
    public unsafe bool TryGetNext(ReadBufferLease buffers, out ReadOnlyMemory<byte> entry, out long address, out long nextAddress)
    {
        while (true)
        {
            long before = _iterator.NextAddress;
            byte* raw;
            int length;
            bool found;
            try
            {
                found = _iterator.UnsafeGetNext(out raw, out length, out address, out nextAddress);
            }
            catch (FasterException error)
            {
                // FASTER released its epoch before throwing: there is nothing to release here.
                SkipDamageOrThrow(before, error);
                continue;
            }
            if (!found)
            {
                ReportDamage();
                entry = default;
                return false;
            }
            bool complete;
            byte[]? whole;
            try
            {
                var span = new ReadOnlySpan<byte>(raw, length);
                complete = TryJoin(span, address, nextAddress, out whole);
                entry = complete && whole is null ? buffers.Copy(span) : default;
            }
            finally
            {
                // The page may be evicted once the epoch is released: nothing may read the raw span after this.
                _iterator.UnsafeRelease();
            }
            if (complete)
            {
                ReportDamage();
                if (whole is not null)
                {
                    entry = whole;
                    address = _headAddress;
                }
                return true;
            }
        }
    }

    /// <summary>
    /// Takes one log entry: true with <paramref name="whole"/> null for an ordinary entry (return it as it is), true
    /// with the joined entry when this fragment completes one, false while fragments are still being joined (or a
    /// continuation whose head was lost to damage is skipped).
    /// </summary>
    private bool TryJoin(ReadOnlySpan<byte> span, long address, long nextAddress, out byte[]? whole)
    {
        whole = null;
        if (_joining is null)
        {
            if (EntryFragments.IsContinuation(span))
            {
                // The rest of an entry whose head lay in the damaged bytes just skipped: part of the same damage.
                if (_pendingDamage is { } damage)
                {
                    _pendingDamage = damage with { ResumeAddress = nextAddress };
                    return false;
                }
                throw new InvalidDataException($"log entry at address {address} continues an entry whose head is missing");
            }
            if (!EntryFragments.IsHead(span))
                return true;
            _joining = new byte[EntryFragments.TotalLength(span)];
            _joined = 0;
            _headAddress = address;
            Append(span[EntryFragments.HeadOverhead..], address);
        }
        else
        {
            if (!EntryFragments.IsContinuation(span))
                throw new InvalidDataException($"log entry at address {address} interrupts the fragmented entry at {_headAddress}");
            Append(span[EntryFragments.ContinuationOverhead..], address);
        }
        if (_joined < _joining.Length)
            return false;
        whole = _joining;
        _joining = null;
        return true;
    }

    private void Append(ReadOnlySpan<byte> part, long address)
    {
        if (part.Length > _joining!.Length - _joined)
            throw new InvalidDataException($"log entry at address {address} overruns the fragmented entry at {_headAddress}");
        part.CopyTo(_joining.AsSpan(_joined));
        _joined += part.Length;
    }

    /// <summary>
    /// What FASTER throws for an entry that fails its checks (its own messages: it has no exception types for them).
    /// Any other failure, a page read that failed for instance, is not damage: skipping would make intact, perhaps
    /// unacknowledged, messages look lost. Those throw (see <see cref="SkipDamageOrThrow"/>).
    /// </summary>
    private static bool IsDamage(FasterException error) =>
        error.Message.StartsWith("Invalid checksum", StringComparison.Ordinal) || error.Message.StartsWith("Invalid length of record", StringComparison.Ordinal);

    /// <summary>
    /// Skips a damaged entry; any other failure throws, and the next call reads from the same place again.
    /// </summary>
    private void SkipDamageOrThrow(long before, FasterException error)
    {
        if (IsDamage(error))
        {
            SkipDamage(before, error);
            return;
        }
        _iterator.Dispose();
        _iterator = _scan(before);
        throw new BrokerException(BrokerErrorCode.StorageFailure, "reading the log failed; nothing was skipped, try again", error);
    }

    /// <summary>
    /// Moves past the damaged entry at or after <paramref name="before"/> to the next page start, on a fresh iterator
    /// (FASTER's cannot be positioned). A fragmented entry being joined is lost with it.
    /// </summary>
    private void SkipDamage(long before, FasterException damage)
    {
        long pageSize = 1L << _pageSizeBits;
        long resume = (Math.Max(_iterator.NextAddress, before + 1) + pageSize - 1) & ~(pageSize - 1);
        long from = _joining is null ? before : _headAddress;
        _joining = null;
        _pendingDamage = _pendingDamage is { } earlier && earlier.ResumeAddress >= from
            ? earlier with { ResumeAddress = resume }
            : new LogDamage(from, resume, damage.Message);
        _iterator.Dispose();
        _iterator = _scan(resume);
    }

    private void ReportDamage()
    {
        if (_pendingDamage is not { } damage)
            return;
        _pendingDamage = null;
        _onDamage?.Invoke(damage);
    }

    /// <summary>Completes when more entries may be available; false once the log has closed.</summary>
    public ValueTask<bool> WaitAsync(CancellationToken cancellationToken) => _iterator.WaitAsync(cancellationToken);

    public void Dispose() => _iterator.Dispose();
}
