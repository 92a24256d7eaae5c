using System.Collections.Concurrent;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace Broker.Storage.Files;

/// <summary>
/// The FASTER device under every log: one file per segment (<c>&lt;name&gt;.&lt;segment&gt;</c>, the same names
/// FASTER's own local devices use, so existing data opens unchanged), written through (<c>O_SYNC</c>, .NET's
/// <see cref="FileOptions.WriteThrough"/>) by the store's
/// <see cref="DiskWriter"/> threads and read on the thread pool.
/// <para>Durability: a write's completion is reported only after the write-through <c>pwrite</c> returned, that is
/// once the data (and the file size) reached the disk. A new segment file's folder entry is flushed before the first
/// write into it, and a new log folder's entry in its parent, so the file itself survives a power cut.</para>
/// </summary>
internal sealed class SegmentFileDevice : StorageDeviceBase
{
    private const uint SectorBytes = 512;

    private readonly ConcurrentDictionary<int, SafeFileHandle> _segments = new();
    private readonly Lock _opening = new();
    private readonly DiskWriter _writer;
    private readonly string _directory;
    private volatile bool _disposed;
    private volatile bool _outOfSpace;
    private int _removalsPending;

    public SegmentFileDevice(string fileName, DiskWriter writer)
        : base(fileName, SectorBytes, Devices.CAPACITY_UNSPECIFIED)
    {
        _writer = writer;
        _directory = Path.GetDirectoryName(Path.GetFullPath(fileName))!;
        DurableFolder.Create(_directory);
        FindExistingSegments();
    }

    /// <summary>Writes are never throttled here: the store's commit gate bounds them.</summary>
    public override bool Throttle() => false;

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite,
        DeviceIOCompletionCallback callback, object context)
    {
        var write = new SegmentWrite(this, segmentId, sourceAddress, (long)destinationAddress, numBytesToWrite, callback, context);
        try
        {
            _writer.Enqueue(write);
        }
        catch (ObjectDisposedException)
        {
            callback(uint.MaxValue, 0, context);
        }
    }

    public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength,
        DeviceIOCompletionCallback callback, object context)
    {
        // The file is opened here, on the caller's thread: FASTER deletes a truncated segment only after every read
        // issued before the truncation (under its epoch) has its file open, and an open file can still be read.
        SafeFileHandle handle;
        try
        {
            handle = Segment(segmentId);
        }
        catch (Exception failure)
        {
            callback(ErrorCode(failure), 0, context);
            return;
        }
        var read = new SegmentRead(handle, (long)sourceAddress, destinationAddress, readLength, callback, context);
        ThreadPool.UnsafeQueueUserWorkItem(static r =>
        {
            try
            {
                r.Execute();
            }
            catch (Exception)
            {
                // As in DiskWriter: only FASTER's callback can throw here, and an escaping exception would end the process.
            }
        }, read, preferLocal: false);
    }

    public override void RemoveSegment(int segment)
    {
        lock (_opening)
        {
            if (_segments.TryRemove(segment, out var handle))
                handle.Dispose();
        }
        try
        {
            DeleteGradually(GetSegmentFilename(FileName, segment));
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // A segment file that cannot be deleted now only costs disk space; the log no longer refers to it.
        }
    }

    /// <summary>
    /// Shrinks the file <see cref="DeleteStepBytes"/> at a time before unlinking it. On ext4 mounted with <c>discard</c>
    /// (this VM; common for cloud disks) freeing a file's blocks discards them on the device, and the commits' writes
    /// to the current segment queue behind: a 64 MiB segment freed in one go held them up 12–13 ms (commits traced
    /// around each truncation, docs/perf.md, "Segment deletion"). In steps, a write waits for one step at most.
    /// </summary>
    private static void DeleteGradually(string path)
    {
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
            for (long length = RandomAccess.GetLength(handle) - DeleteStepBytes; length > 0; length -= DeleteStepBytes)
                RandomAccess.SetLength(handle, length);
            RandomAccess.SetLength(handle, 0);
        }
        catch (FileNotFoundException)
        {
            return;
        }
        File.Delete(path);
    }

    /// <summary>How much of a segment file one step of <see cref="DeleteGradually"/> frees.</summary>
    private const long DeleteStepBytes = 4L << 20;

    /// <summary>
    /// Deletes the segment on the thread pool. FASTER calls this from an epoch action, run by whichever thread next
    /// drains its epoch: often a publish holding the log's append lock, or the commit. Unlinking a 64 MiB segment takes
    /// about 11 ms on ext4 here, and every truncated segment stalled publishing that long: p99.9 at 20k msg/s 20–21 ms
    /// against 6.4–7.0 with segments too large to be truncated during the run (docs/perf.md, "Segment deletion").
    /// </summary>
    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        Interlocked.Increment(ref _removalsPending);
        ThreadPool.UnsafeQueueUserWorkItem(static state =>
        {
            var (device, segment, callback, result) = state;
            try
            {
                device.RemoveSegment(segment);
                callback(result);
            }
            catch (Exception)
            {
                // RemoveSegment keeps its own I/O errors; only FASTER's callback can throw here, and an escaping
                // exception would end the process.
            }
            finally
            {
                Interlocked.Decrement(ref device._removalsPending);
            }
        }, (this, segment, callback, result), preferLocal: false);
    }

    public override void Dispose()
    {
        _disposed = true;
        // A deletion still queued finishes first: the log's folder may be deleted next (a deleted topic).
        SpinWait.SpinUntil(() => Volatile.Read(ref _removalsPending) == 0, TimeSpan.FromSeconds(10));
        lock (_opening)
        {
            foreach (var handle in _segments.Values)
                handle.Dispose();
            _segments.Clear();
        }
    }

    private SafeFileHandle Segment(int segmentId)
    {
        if (_segments.TryGetValue(segmentId, out var handle))
            return handle;
        lock (_opening)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_segments.TryGetValue(segmentId, out handle))
                return handle;
            string path = GetSegmentFilename(FileName, segmentId);
            bool created = !File.Exists(path);
            handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete,
                FileOptions.WriteThrough);
            if (created)
            {
                try
                {
                    DurableFolder.Flush(_directory);
                }
                catch
                {
                    handle.Dispose();
                    throw;
                }
            }
            _segments[segmentId] = handle;
            return handle;
        }
    }

    /// <summary>
    /// Asks the kernel to drop the cached pages of the segments below <paramref name="segment"/>: their messages are
    /// consumed, and what still reads them (a restart's scan, a group created at the earliest message, retention looking
    /// for its cut) is rare and may read from disk, so their memory is better spent on the segments being written.
    /// Advice only, and cheap for a file with nothing cached: maintenance repeats it each round, so pages such a reader
    /// brought back go again.
    /// </summary>
    public void DropCachedSegmentsBelow(int segment)
    {
        if (!OperatingSystem.IsLinux())
            return;
        for (int id = StartSegment; id < segment; id++)
        {
            try
            {
                // The marshaller holds a reference on the handle for the call: a removal meanwhile waits to close it.
                if (_segments.TryGetValue(id, out var handle))
                    _ = NativeMethods.Fadvise(handle, 0, 0, NativeMethods.AdviseDontNeed);
            }
            catch (ObjectDisposedException)
            {
                // Removed meanwhile: its pages went with the file.
            }
        }
    }

    /// <summary>True once a write failed because the disk (or the quota) was full: the log's failure is a full disk.</summary>
    public bool OutOfSpace => _outOfSpace;

    /// <summary>Sets the first and last segment from the files on disk, as FASTER's own devices do on recovery.</summary>
    private void FindExistingSegments()
    {
        string prefix = Path.GetFileName(FileName) + ".";
        var ids = new List<int>();
        foreach (string path in Directory.EnumerateFiles(_directory, prefix + "*"))
        {
            if (int.TryParse(Path.GetFileName(path).AsSpan(prefix.Length), out int id))
                ids.Add(id);
        }
        ids.Sort();
        int previous = -1;
        foreach (int id in ids)
        {
            if (id != previous + 1)
                startSegment = id;
            else
                endSegment = id;
            previous = id;
        }
    }

    /// <summary>FASTER's completion callbacks take an error code: the errno-like low bits of an I/O error, or all ones.</summary>
    private static uint ErrorCode(Exception error) =>
        error is IOException { HResult: var result } && (result & 0xFFFF) != 0 ? (uint)(result & 0xFFFF) : uint.MaxValue;

    private sealed class SegmentWrite(SegmentFileDevice device, int segmentId, IntPtr source, long offset, uint length,
        DeviceIOCompletionCallback callback, object context) : IDiskWrite
    {
        public unsafe void Execute()
        {
            uint error = 0;
            try
            {
                RandomAccess.Write(device.Segment(segmentId), new ReadOnlySpan<byte>((void*)source, checked((int)length)), offset);
            }
            catch (Exception failure)
            {
                error = ErrorCode(failure);
                if (DiskErrors.IsOutOfSpace(error))
                    device._outOfSpace = true;
            }
            callback(error, error == 0 ? length : 0, context);
        }
    }

    private sealed class SegmentRead(SafeFileHandle handle, long offset, IntPtr destination, uint length,
        DeviceIOCompletionCallback callback, object context)
    {
        public unsafe void Execute()
        {
            uint error = 0;
            int read = 0;
            try
            {
                var buffer = new Span<byte>((void*)destination, checked((int)length));
                // A read may return less than asked (end of file or a short read); keep reading until the range or the file ends.
                while (read < buffer.Length)
                {
                    int n = RandomAccess.Read(handle, buffer[read..], offset + read);
                    if (n == 0)
                        break;
                    read += n;
                }
            }
            catch (Exception failure)
            {
                error = ErrorCode(failure);
            }
            callback(error, error == 0 ? (uint)read : 0, context);
        }
    }
}
