{
	"patcher": {
		"fileversion": 1,
		"appversion": {
			"major": 8,
			"minor": 5,
			"revision": 0,
			"architecture": "x64",
			"modernui": 1
		},
		"classnamespace": "box",
		"rect": [
			100.0,
			100.0,
			760.0,
			660.0
		],
		"openinpresentation": 0,
		"default_fontsize": 12.0,
		"gridsize": [
			15.0,
			15.0
		],
		"boxes": [
			{
				"box": {
					"id": "obj-1",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						10.0,
						640.0,
						22.0
					],
					"text": "ganstream OSC remote: start `ganstream play` (it listens on 127.0.0.1:9000) and move the sliders. The namespace is in docs/osc.md."
				}
			},
			{
				"box": {
					"id": "obj-2",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						600.0,
						154.0,
						22.0
					],
					"text": "udpsend 127.0.0.1 9000"
				}
			},
			{
				"box": {
					"id": "obj-3",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						50.0,
						300.0,
						22.0
					],
					"text": "macros: the bundle's controls, -1 .. 1"
				}
			},
			{
				"box": {
					"id": "obj-4",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						80.0,
						100.0,
						22.0
					],
					"text": "pc1"
				}
			},
			{
				"box": {
					"id": "obj-5",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						102.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-6",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						126.0,
						126.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 -1. 1."
				}
			},
			{
				"box": {
					"id": "obj-7",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						150.0,
						196.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/macro/pc1"
				}
			},
			{
				"box": {
					"id": "obj-8",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						175.0,
						100.0,
						22.0
					],
					"text": "pc2"
				}
			},
			{
				"box": {
					"id": "obj-9",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						197.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-10",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						221.0,
						126.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 -1. 1."
				}
			},
			{
				"box": {
					"id": "obj-11",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						245.0,
						196.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/macro/pc2"
				}
			},
			{
				"box": {
					"id": "obj-12",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						270.0,
						100.0,
						22.0
					],
					"text": "pc3"
				}
			},
			{
				"box": {
					"id": "obj-13",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						292.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-14",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						316.0,
						126.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 -1. 1."
				}
			},
			{
				"box": {
					"id": "obj-15",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						340.0,
						196.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/macro/pc3"
				}
			},
			{
				"box": {
					"id": "obj-16",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						365.0,
						100.0,
						22.0
					],
					"text": "brightness"
				}
			},
			{
				"box": {
					"id": "obj-17",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						387.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-18",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						411.0,
						126.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 -1. 1."
				}
			},
			{
				"box": {
					"id": "obj-19",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						435.0,
						245.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/macro/brightness"
				}
			},
			{
				"box": {
					"id": "obj-20",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20.0,
						460.0,
						100.0,
						22.0
					],
					"text": "loudness"
				}
			},
			{
				"box": {
					"id": "obj-21",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						482.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-22",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						506.0,
						126.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 -1. 1."
				}
			},
			{
				"box": {
					"id": "obj-23",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						20.0,
						530.0,
						231.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/macro/loudness"
				}
			},
			{
				"box": {
					"id": "obj-24",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						260.0,
						50.0,
						300.0,
						22.0
					],
					"text": "gain, walk, seed"
				}
			},
			{
				"box": {
					"id": "obj-25",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						260.0,
						80.0,
						120.0,
						22.0
					],
					"text": "gain"
				}
			},
			{
				"box": {
					"id": "obj-26",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						102.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-27",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						126.0,
						119.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 0. 1."
				}
			},
			{
				"box": {
					"id": "obj-28",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						150.0,
						161.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/gain"
				}
			},
			{
				"box": {
					"id": "obj-29",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						260.0,
						175.0,
						120.0,
						22.0
					],
					"text": "walk rate (Hz)"
				}
			},
			{
				"box": {
					"id": "obj-30",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						197.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-31",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						221.0,
						119.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 0. 4."
				}
			},
			{
				"box": {
					"id": "obj-32",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						245.0,
						196.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/walk/rate"
				}
			},
			{
				"box": {
					"id": "obj-33",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						260.0,
						270.0,
						120.0,
						22.0
					],
					"text": "walk depth"
				}
			},
			{
				"box": {
					"id": "obj-34",
					"maxclass": "slider",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						292.0,
						140.0,
						20.0
					],
					"outlettype": [
						""
					],
					"orientation": 1,
					"size": 128.0
				}
			},
			{
				"box": {
					"id": "obj-35",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						316.0,
						126.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "scale 0 127 0. 1.5"
				}
			},
			{
				"box": {
					"id": "obj-36",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						340.0,
						203.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/walk/depth"
				}
			},
			{
				"box": {
					"id": "obj-37",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						260.0,
						370.0,
						60.0,
						22.0
					],
					"text": "seed"
				}
			},
			{
				"box": {
					"id": "obj-38",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [
						260.0,
						392.0,
						60.0,
						22.0
					],
					"outlettype": [
						"",
						""
					],
					"minimum": 0
				}
			},
			{
				"box": {
					"id": "obj-39",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						420.0,
						161.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "prepend /ganstream/seed"
				}
			},
			{
				"box": {
					"id": "obj-40",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						260.0,
						455.0,
						160.0,
						22.0
					],
					"text": "trigger (trigger mode)"
				}
			},
			{
				"box": {
					"id": "obj-41",
					"maxclass": "button",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						260.0,
						477.0,
						24.0,
						24.0
					],
					"outlettype": [
						""
					]
				}
			},
			{
				"box": {
					"id": "obj-42",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						300.0,
						477.0,
						147.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/trigger 1."
				}
			},
			{
				"box": {
					"id": "obj-43",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						480.0,
						50.0,
						300.0,
						22.0
					],
					"text": "presets"
				}
			},
			{
				"box": {
					"id": "obj-44",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						80.0,
						220.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/preset/save calm"
				}
			},
			{
				"box": {
					"id": "obj-45",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						108.0,
						220.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/preset/save storm"
				}
			},
			{
				"box": {
					"id": "obj-46",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						146.0,
						220.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/preset/load calm"
				}
			},
			{
				"box": {
					"id": "obj-47",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						174.0,
						220.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/preset/load storm"
				}
			},
			{
				"box": {
					"id": "obj-48",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						212.0,
						220.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/preset/morph calm 4."
				}
			},
			{
				"box": {
					"id": "obj-49",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						240.0,
						220.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/preset/morph storm 4."
				}
			},
			{
				"box": {
					"id": "obj-50",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						480.0,
						330.0,
						300.0,
						22.0
					],
					"text": "status and MIDI learn"
				}
			},
			{
				"box": {
					"id": "obj-51",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						352.0,
						119.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/status"
				}
			},
			{
				"box": {
					"id": "obj-52",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						380.0,
						182.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/learn macro/pc1"
				}
			},
			{
				"box": {
					"id": "obj-53",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						408.0,
						147.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "/ganstream/learn/save"
				}
			},
			{
				"box": {
					"id": "obj-54",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						480.0,
						450.0,
						260.0,
						22.0
					],
					"text": "replies (status, errors, learned): start ganstream with --osc-reply-port 9001"
				}
			},
			{
				"box": {
					"id": "obj-55",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [
						480.0,
						500.0,
						105.0,
						22.0
					],
					"outlettype": [
						""
					],
					"text": "udpreceive 9001"
				}
			},
			{
				"box": {
					"id": "obj-56",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						480.0,
						530.0,
						105.0,
						22.0
					],
					"text": "print ganstream"
				}
			}
		],
		"lines": [
			{
				"patchline": {
					"source": [
						"obj-5",
						0
					],
					"destination": [
						"obj-6",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-6",
						0
					],
					"destination": [
						"obj-7",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-7",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-9",
						0
					],
					"destination": [
						"obj-10",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-10",
						0
					],
					"destination": [
						"obj-11",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-11",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-13",
						0
					],
					"destination": [
						"obj-14",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-14",
						0
					],
					"destination": [
						"obj-15",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-15",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-17",
						0
					],
					"destination": [
						"obj-18",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-18",
						0
					],
					"destination": [
						"obj-19",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-19",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-21",
						0
					],
					"destination": [
						"obj-22",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-22",
						0
					],
					"destination": [
						"obj-23",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-23",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-26",
						0
					],
					"destination": [
						"obj-27",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-27",
						0
					],
					"destination": [
						"obj-28",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-28",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-30",
						0
					],
					"destination": [
						"obj-31",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-31",
						0
					],
					"destination": [
						"obj-32",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-32",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-34",
						0
					],
					"destination": [
						"obj-35",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-35",
						0
					],
					"destination": [
						"obj-36",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-36",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-38",
						0
					],
					"destination": [
						"obj-39",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-39",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-41",
						0
					],
					"destination": [
						"obj-42",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-42",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-44",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-45",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-46",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-47",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-48",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-49",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-51",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-52",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-53",
						0
					],
					"destination": [
						"obj-2",
						0
					]
				}
			},
			{
				"patchline": {
					"source": [
						"obj-55",
						0
					],
					"destination": [
						"obj-56",
						0
					]
				}
			}
		],
		"dependency_cache": [],
		"autosave": 0
	}
}
