using System.Diagnostics;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// A real full disk: the data folder is a size-limited tmpfs. Invariant: publishing into a full disk fails with
/// RESOURCE_EXHAUSTED (error 1202), never crashes or hangs the broker; once space is freed publishing works again
/// without a restart; and every publish acknowledged before stays readable, then and after a restart. Meanwhile health
/// reports the topic's failed storage.
/// </summary>
public sealed class FullDiskTests
{
    [Fact]
    public async Task A_full_disk_refuses_publishes_until_space_is_freed_and_keeps_what_was_acknowledged()
    {
        using var disk = await TmpfsMount.CreateAsync(sizeMegabytes: 8);
        var acknowledged = new List<(long Offset, int Index)>();

        await using (var broker = await TestBroker.StartOnAsync(disk.Path))
        {
            // 1. Fill the disk until a publish fails.
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
            Assert.Equal(StatusCode.ResourceExhausted, failure.Status);
            Assert.Equal(1202, failure.ErrorCode);
            Assert.NotEmpty(acknowledged);
            // The broker keeps answering: the next batch fails the same way (the topic may be reopened meanwhile,
            // the disk is still full), admin calls still work.
            var again = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.PublishAsync("items",
                Enumerable.Range(0, 16).Select(i => new OutgoingMessage(Payload(-1 - i)))).WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.Equal(StatusCode.ResourceExhausted, again.Status);
            Assert.Equal(1202, again.ErrorCode);
            Assert.Contains("items", await broker.Client.ListTopicsAsync());
            // Health names the failed topic's storage, over HTTP and on the standard gRPC health service.
            using (var http = new HttpClient { BaseAddress = broker.Host.HttpAddress })
            {
                var health = await http.GetAsync("/healthz");
                Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, health.StatusCode);
                Assert.Equal("Unhealthy: storage failed in 1 topic(s): items", await health.Content.ReadAsStringAsync());
            }
            var grpcHealth = await new Grpc.Health.V1.Health.HealthClient(broker.Client.Channel).CheckAsync(new Grpc.Health.V1.HealthCheckRequest());
            Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.NotServing, grpcHealth.Status);

            // 2. Make room, no restart: publishing works again (the topic is reopened from its last commit, at most
            //    once a second, so the first tries may still meet the failed one), and everything acknowledged is there.
            await disk.ResizeAsync(sizeMegabytes: 64);
            var recovered = await PublishUntilAcceptedAsync(broker.Client, OutgoingMessage.FromText("room again"));
            Assert.Equal(acknowledged[^1].Offset + 1, recovered.FirstOffset);
            await AssertAllReadableAsync(broker.Client, "during", acknowledged);
        }

        // 3. And after a restart.
        await using (var broker = await TestBroker.StartOnAsync(disk.Path))
            await AssertAllReadableAsync(broker.Client, "after", acknowledged);
    }

    private static async Task<PublishResult> PublishUntilAcceptedAsync(BrokerClient client, OutgoingMessage message)
    {
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (true)
        {
            try
            {
                return await client.PublishAsync("items", [message], deadline.Token);
            }
            catch (BrokerClientException error) when (error.ErrorCode is 1200 or 1202 && !deadline.IsCancellationRequested)
            {
                await Task.Delay(100, deadline.Token);
            }
        }
    }

    private static async Task AssertAllReadableAsync(BrokerClient client, string group, List<(long Offset, int Index)> acknowledged)
    {
        await using var subscription = await client.SubscribeAsync("items", group, new SubscribeOptions { MaxInFlight = 10_000 });
        var received = await Receive.ExactlyAsync(subscription, acknowledged.Count);
        foreach (var ((offset, index), message) in acknowledged.Zip(received))
        {
            Assert.Equal(offset, message.Offset);
            Assert.Equal(Payload(index), message.Payload.ToArray());
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
