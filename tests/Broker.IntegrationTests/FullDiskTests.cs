using System.Diagnostics;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// A real full disk: the data folder is a size-limited tmpfs. Invariant: publishing into a full disk fails with
/// UNAVAILABLE (error 1200), never crashes or hangs the broker, and every publish acknowledged before stays
/// readable once there is room again.
/// </summary>
public sealed class FullDiskTests
{
    [Fact]
    public async Task Publishing_into_a_full_disk_fails_cleanly_and_keeps_what_was_acknowledged()
    {
        using var disk = await TmpfsMount.CreateAsync(sizeMegabytes: 8);
        var acknowledged = new List<(long Offset, int Index)>();

        // 1. Fill the disk until a publish fails.
        await using (var broker = await TestBroker.StartOnAsync(disk.Path))
        {
            await broker.Client.CreateTopicAsync("items");
            BrokerClientException? failure = null;
            for (int batch = 0; batch < 1_000 && failure is null; batch++)
            {
                var messages = Enumerable.Range(0, 16).Select(i => new OutgoingMessage(Payload(batch * 16 + i))).ToList();
                try
                {
                    var result = await broker.Client.PublishAsync("items", messages).WaitAsync(TimeSpan.FromSeconds(60));
                    acknowledged.AddRange(Enumerable.Range(0, 16).Select(i => (result.FirstOffset + i, batch * 16 + i)));
                }
                catch (BrokerClientException error)
                {
                    failure = error;
                }
            }

            Assert.NotNull(failure);
            Assert.Equal(StatusCode.Unavailable, failure.Status);
            Assert.Equal(1200, failure.ErrorCode);
            Assert.NotEmpty(acknowledged);
            // The broker keeps answering: the next publish fails the same way, admin calls still work.
            var again = await Assert.ThrowsAsync<BrokerClientException>(() =>
                broker.Client.PublishAsync("items", [OutgoingMessage.FromText("x")]).WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.Equal(1200, again.ErrorCode);
            Assert.Contains("items", await broker.Client.ListTopicsAsync());
        }

        // 2. Make room and restart: everything acknowledged is there, intact.
        await disk.ResizeAsync(sizeMegabytes: 64);
        await using (var broker = await TestBroker.StartOnAsync(disk.Path))
        {
            await using var subscription = await broker.Client.SubscribeAsync("items", "audit", new SubscribeOptions { MaxInFlight = 10_000 });
            var received = await Receive.ExactlyAsync(subscription, acknowledged.Count);
            foreach (var ((offset, index), message) in acknowledged.Zip(received))
            {
                Assert.Equal(offset, message.Offset);
                Assert.Equal(Payload(index), message.Payload.ToArray());
            }
            Assert.Equal(acknowledged.Count + 1, (await broker.Client.PublishAsync("items", [OutgoingMessage.FromText("room again")])).FirstOffset + 1);
        }
    }

    private static byte[] Payload(int index)
    {
        var payload = new byte[16 * 1024];
        new Random(index).NextBytes(payload);
        return payload;
    }
}

/// <summary>A size-limited tmpfs mounted on a fresh temp folder (needs root); unmounted and removed on dispose.</summary>
internal sealed class TmpfsMount : IDisposable
{
    private TmpfsMount(string path) => Path = path;

    public string Path { get; }

    public static Task<TmpfsMount> CreateAsync(int sizeMegabytes) => MountAtAsync(TestBroker.NewDataDirectory(), sizeMegabytes);

    /// <summary>Mounts the tmpfs on <paramref name="path"/> (created if missing): one folder of a data folder can fill up alone.</summary>
    public static async Task<TmpfsMount> MountAtAsync(string path, int sizeMegabytes)
    {
        Directory.CreateDirectory(path);
        await RunAsync("mount", "-t", "tmpfs", "-o", $"size={sizeMegabytes}m", "tmpfs", path);
        return new TmpfsMount(path);
    }

    /// <summary>Writes a file until the tmpfs is full; deleting it makes room again.</summary>
    public string Fill()
    {
        string filler = System.IO.Path.Combine(Path, "filler");
        var chunk = new byte[64 * 1024];
        try
        {
            using var stream = new FileStream(filler, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            while (true)
                stream.Write(chunk);
        }
        catch (IOException)
        {
            // No space left: full.
        }
        return filler;
    }

    public Task ResizeAsync(int sizeMegabytes) => RunAsync("mount", "-o", $"remount,size={sizeMegabytes}m", Path);

    public void Dispose()
    {
        RunAsync("umount", "-l", Path).GetAwaiter().GetResult();
        Directory.Delete(Path, recursive: true);
    }

    private static async Task RunAsync(string command, params string[] arguments)
    {
        var start = new ProcessStartInfo(command) { RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        string error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"{command} {string.Join(' ', arguments)} failed (this test needs root): {error}");
    }
}
