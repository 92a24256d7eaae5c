using System.Runtime.InteropServices;
using Broker.Storage.Files;
using FASTER.core;

namespace Broker.Storage.Tests;

/// <summary>
/// The device under every log, on real files: writes reach the segment files at the right offsets, a reopened device
/// finds its segments, removed segments are deleted, and a failed write is reported through the callback.
/// </summary>
public sealed class SegmentFileDeviceTests : IDisposable
{
    private const int SegmentBits = 16;

    private readonly TempDirectory _data = new();
    private readonly DiskWriter _writer = new(threads: 2, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);

    public void Dispose()
    {
        _writer.Dispose();
        _data.Dispose();
    }

    private SegmentFileDevice OpenDevice()
    {
        var device = new SegmentFileDevice(Path.Combine(_data.Path, "log"), _writer);
        device.Initialize(1L << SegmentBits);
        return device;
    }

    [Fact]
    public async Task Writes_land_in_their_segment_files_and_read_back_after_a_reopen()
    {
        var first = Bytes(4096, seed: 1);
        var second = Bytes(512, seed: 2);
        using (var device = OpenDevice())
        {
            Assert.Equal(0u, await WriteAsync(device, segment: 0, offset: 8192, first));
            Assert.Equal(0u, await WriteAsync(device, segment: 3, offset: 0, second));
        }

        Assert.Equal(first, File.ReadAllBytes(Path.Combine(_data.Path, "log.0")).AsSpan(8192, 4096).ToArray());
        Assert.Equal(second, File.ReadAllBytes(Path.Combine(_data.Path, "log.3")));
        using (var reopened = OpenDevice())
        {
            // Segments 0 and 3 exist: FASTER's own devices report the last of a contiguous run from 0, and the
            // first one after a gap as the start (truncation removes segments from the front).
            Assert.Equal(3, reopened.StartSegment);
            Assert.Equal(first, await ReadAsync(reopened, segment: 0, offset: 8192, length: 4096));
            Assert.Equal(second, await ReadAsync(reopened, segment: 3, offset: 0, length: 512));
        }
    }

    [Fact]
    public async Task A_removed_segment_is_deleted()
    {
        using var device = OpenDevice();
        Assert.Equal(0u, await WriteAsync(device, segment: 0, offset: 0, Bytes(512, seed: 3)));
        Assert.Equal(0u, await WriteAsync(device, segment: 1, offset: 0, Bytes(512, seed: 4)));

        device.RemoveSegment(0);

        Assert.False(File.Exists(Path.Combine(_data.Path, "log.0")));
        Assert.True(File.Exists(Path.Combine(_data.Path, "log.1")));
    }

    [Fact]
    public async Task Segments_removed_as_faster_truncates_are_deleted_before_the_callback_and_before_dispose_returns()
    {
        var device = OpenDevice();
        for (int segment = 0; segment < 4; segment++)
            Assert.Equal(0u, await WriteAsync(device, segment, offset: 0, Bytes(512, seed: segment)));

        // As FASTER's truncation calls it: from an epoch action, completion through the callback.
        var removed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool goneAtCallback = false;
        device.RemoveSegmentAsync(0, _ =>
        {
            goneAtCallback = !File.Exists(Path.Combine(_data.Path, "log.0"));
            removed.SetResult();
        }, null!);
        await removed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(goneAtCallback);

        device.RemoveSegmentAsync(1, _ => { }, null!);
        device.RemoveSegmentAsync(2, _ => { }, null!);
        device.Dispose();

        Assert.False(File.Exists(Path.Combine(_data.Path, "log.1")));
        Assert.False(File.Exists(Path.Combine(_data.Path, "log.2")));
        Assert.True(File.Exists(Path.Combine(_data.Path, "log.3")));
    }

    [Fact]
    public async Task A_write_that_fails_reports_an_error_code_instead_of_throwing()
    {
        var device = OpenDevice();
        device.Dispose();

        // The device is closed: the write cannot open its segment, and the failure arrives through the callback.
        Assert.NotEqual(0u, await WriteAsync(device, segment: 0, offset: 0, Bytes(512, seed: 5)));
    }

    private static byte[] Bytes(int length, int seed) => Enumerable.Range(0, length).Select(i => (byte)(i * 13 + seed)).ToArray();

    private static Task<uint> WriteAsync(SegmentFileDevice device, int segment, ulong offset, byte[] data)
    {
        var done = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pinned = GCHandle.Alloc(data, GCHandleType.Pinned);
        device.WriteAsync(pinned.AddrOfPinnedObject(), segment, offset, (uint)data.Length, (error, _, _) =>
        {
            pinned.Free();
            done.SetResult(error);
        }, null!);
        return done.Task;
    }

    private static async Task<byte[]> ReadAsync(SegmentFileDevice device, int segment, ulong offset, int length)
    {
        var buffer = new byte[length];
        var done = new TaskCompletionSource<(uint Error, uint Read)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pinned = GCHandle.Alloc(buffer, GCHandleType.Pinned);
        device.ReadAsync(segment, offset, pinned.AddrOfPinnedObject(), (uint)length, (error, read, _) =>
        {
            pinned.Free();
            done.SetResult((error, read));
        }, null!);
        var (errorCode, bytesRead) = await done.Task;
        Assert.Equal(0u, errorCode);
        Assert.Equal((uint)length, bytesRead);
        return buffer;
    }
}
